"""The OpenAPI 3.1 document of /api/v1 (served at /api/v1/openapi.json; tests check real answers against it)."""

from __future__ import annotations

from typing import Any

STRING, INTEGER, BOOLEAN = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
NULLABLE_STRING = {"type": ["string", "null"]}
STRINGS = {"type": "array", "items": STRING}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(required: dict[str, Any], optional: dict[str, Any] | None = None, extra: bool = False) -> dict[str, Any]:
    return {"type": "object", "required": sorted(required), "properties": {**required, **(optional or {})},
            "additionalProperties": extra}


def _listing(item: str) -> dict[str, Any]:
    return _object({"items": {"type": "array", "items": _ref(item)}, "page": INTEGER, "per_page": INTEGER,
                    "total": INTEGER, "next": NULLABLE_STRING})


SCHEMAS: dict[str, Any] = {
    "Error": _object({"error": _object({"status": INTEGER, "message": STRING})}),
    "IssueSummary": _object({
        "number": INTEGER, "status": {"enum": ["draft", "approved", "sending", "sent", "cancelled"]},
        "subject": STRING, "version": STRING, "items": INTEGER,
        "window": _object({"start": STRING, "end": STRING}),
        "created_at": NULLABLE_STRING, "approved_at": NULLABLE_STRING, "approved_by": NULLABLE_STRING,
        "sent_at": NULLABLE_STRING}),
    "IssueList": _listing("IssueSummary"),
    # The manifest (docs/compose.md): its sections and items are described there; here, what every one has.
    "Manifest": {"type": "object", "required": ["issue", "sections"],
                 "properties": {"issue": {"type": "object", "required": ["number", "status", "version", "subject"],
                                          "properties": {"number": INTEGER, "status": STRING, "version": STRING,
                                                         "subject": STRING, "intro": STRING}},
                                "sections": {"type": "array", "items": {"type": "object"}},
                                "feeds": {"type": "array", "items": {"type": "object"}}}},
    "IssueEdit": {"type": "object", "additionalProperties": False, "minProperties": 1,
                  "properties": {"subject": STRING, "intro": STRING, "lead": STRING, "pin": STRINGS, "unpin": STRINGS,
                                 "drop": STRINGS, "undrop": STRINGS,
                                 # Other languages' texts: {"fr": {"intro": "…"}}; "" clears a field, null a language.
                                 "texts": {"type": "object", "propertyNames": {"enum": ["en", "fr", "de"]},
                                           "additionalProperties": {"type": ["object", "null"],
                                                                    "additionalProperties": False,
                                                                    "properties": {"subject": STRING, "intro": STRING,
                                                                                   "lead": STRING}}}}},
    "Approve": _object({"version": STRING}),
    "Approval": _object({"number": INTEGER, "status": STRING, "version": STRING,
                         "send": {"enum": ["not scheduled", "at its send time", "at once", "after a fresh approval"]}}),
    "SendStarted": _object({"number": INTEGER, "status": {"const": "sending"}, "report": STRING}),
    "Report": _object({"number": INTEGER, "status": STRING, "sent": INTEGER, "failed": INTEGER, "bounced": INTEGER,
                       "skipped": INTEGER, "waiting": INTEGER, "possibly_delivered": INTEGER,
                       "unsubscribes": INTEGER, "complaints": INTEGER,
                       "ledger": {"type": "object", "additionalProperties": INTEGER}}),
    # Click counts (web.count_clicks): numbers per link, summed over an issue's languages; nothing about readers.
    "ClickedLink": _object({"title": STRING, "url": STRING, "item_key": STRING, "section": STRING, "clicks": INTEGER,
                            "languages": {"type": "object", "additionalProperties": INTEGER}},
                           {"issues": {"type": "array", "items": INTEGER}}),
    "IssueClicks": _object({"number": INTEGER, "status": STRING, "counting": BOOLEAN, "clicks": INTEGER,
                            "links": {"type": "array", "items": _ref("ClickedLink")}}),
    "Reading": _object({
        "counting": BOOLEAN, "this_week": {"type": "array", "items": _ref("ClickedLink")},
        "series": {"type": "array", "items": _object({"id": STRING, "name": STRING, "clicks": INTEGER,
                                                      "links": {"type": "array", "items": _ref("ClickedLink")}})},
        "issues": {"type": "array", "items": _object({"number": INTEGER, "subject": STRING,
                                                      "sent_at": NULLABLE_STRING, "clicks": INTEGER})}}),
    "Feed": _object({"name": STRING, "url": STRING, "status": NULLABLE_STRING, "message": STRING,
                     "last_success_at": NULLABLE_STRING, "consecutive_failures": INTEGER}),
    "FeedList": _listing("Feed"),
    "NewSubscriber": {"type": "object", "required": ["email"], "additionalProperties": True,
                      "properties": {"email": STRING, "name": STRING, "language": STRING, "series": STRINGS,
                                     "want_events": BOOLEAN, "want_media": BOOLEAN}},
    "SubscriberCreated": _object({"email": STRING, "status": {"const": "confirmation sent"}, "message": STRING}),
    "SubscriberChoices": {"type": "object", "additionalProperties": False,
                          "properties": {"language": STRING, "series": STRINGS, "want_events": BOOLEAN,
                                         "want_media": BOOLEAN}},
    "Subscriber": _object({
        "email": STRING, "name": STRING, "language": STRING, "series": STRINGS, "want_events": BOOLEAN,
        "want_media": BOOLEAN, "status": {"enum": ["pending", "confirmed", "unsubscribed", "bounced", "complained"]},
        "consent_at": NULLABLE_STRING, "consent_method": STRING,
        "events": {"type": "array", "items": _object({"event": STRING, "at": NULLABLE_STRING, "detail": STRING,
                                                      "issue": {"type": ["integer", "null"]}})}}),
    "Unsubscribed": _object({"email": STRING, "status": NULLABLE_STRING}),
    "Erased": _object({"email": STRING, "erased": {"const": True}, "existed": BOOLEAN}),
}

ERRORS = {code: {"description": text, "content": {"application/json": {"schema": _ref("Error")}}}
          for code, text in (("400", "Bad input: the message says which field"),
                             ("401", "No token, or one that is revoked, disabled or unknown"),
                             ("403", "The token's role may not do this"), ("404", "No such issue or subscriber"),
                             ("409", "The issue's state does not allow it"), ("413", "The body is too large"),
                             ("415", "The body is not JSON"))}
PAGE_PARAMETERS = [{"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                   {"name": "per_page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}}]
NUMBER = [{"name": "number", "in": "path", "required": True, "schema": INTEGER}]
EMAIL = [{"name": "email", "in": "path", "required": True, "schema": STRING}]


def _operation(summary: str, role: str, status: str, schema: str, body: str | None = None,
               parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary, "description": f"Needs the {role} role or above.",
        "responses": {status: {"description": summary, "content": {"application/json": {"schema": _ref(schema)}}},
                      **ERRORS}}
    if parameters:
        operation["parameters"] = parameters
    if body:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    return operation


def openapi_document() -> dict[str, Any]:
    """The document, built fresh (a caller may change its copy)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "digest API", "version": "1",
                 "description": "Issues, subscribers, feed status, delivery reports and click counts. See docs/api.md."},
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"token": {"type": "http", "scheme": "bearer",
                                                     "description": "`digest users token EMAIL`"}}},
        "security": [{"token": []}],
        "paths": {
            "/api/v1/issues": {
                "get": _operation("List issues, newest first", "editor", "200", "IssueList",
                                  parameters=PAGE_PARAMETERS),
                "post": _operation("Build (or refresh) the draft for the window up to now", "editor", "201",
                                   "Manifest")},
            "/api/v1/issues/{number}": {
                "get": _operation("An issue's manifest", "editor", "200", "Manifest", parameters=NUMBER),
                "patch": _operation("Edit a draft's subject, intro, lead, texts per language, pins and drops",
                                    "editor", "200", "Manifest", "IssueEdit", NUMBER)},
            "/api/v1/issues/{number}/approve": {
                "post": _operation("Approve exactly this version of a draft", "approver", "200", "Approval",
                                   "Approve", NUMBER)},
            "/api/v1/issues/{number}/send": {
                "post": _operation("Start sending an approved issue now", "approver", "202", "SendStarted",
                                   parameters=NUMBER)},
            "/api/v1/issues/{number}/report": {
                "get": _operation("An issue's delivery report", "editor", "200", "Report", parameters=NUMBER)},
            "/api/v1/issues/{number}/clicks": {
                "get": _operation("Clicks on an issue's links, per link and language (web.count_clicks)", "editor",
                                  "200", "IssueClicks", parameters=NUMBER)},
            "/api/v1/reading": {
                "get": _operation("Most read this week, most read per series over 12 weeks, clicks per recent issue",
                                  "editor", "200", "Reading")},
            "/api/v1/feeds": {
                "get": _operation("Every feed's health", "editor", "200", "FeedList", parameters=PAGE_PARAMETERS)},
            "/api/v1/subscribers": {
                "post": _operation("Sign someone up: the same double opt-in as the subscribe page", "editor", "202",
                                   "SubscriberCreated", "NewSubscriber")},
            "/api/v1/subscribers/{email}": {
                "get": _operation("A subscriber and their history", "editor", "200", "Subscriber", parameters=EMAIL),
                "patch": _operation("Change a subscriber's language, series or sections", "editor", "200",
                                    "Subscriber", "SubscriberChoices", EMAIL),
                "delete": _operation("Erase a subscriber (GDPR): only a keyed hash of the address stays", "admin",
                                     "200", "Erased", parameters=EMAIL)},
            "/api/v1/subscribers/{email}/unsubscribe": {
                "post": _operation("Unsubscribe on staff's word", "editor", "200", "Unsubscribed", parameters=EMAIL)},
        },
    }
