"""Use case: the schedule and the branding, from one source of truth — read, checked, saved, previewed, exported.

The rule (as for feeds and series, see digest.pipeline.managed): a [schedule] or [branding] table in
digest.toml provisions that section, read-only here (SettingsProvisioned); without it the section
lives in the store as one versioned JSON value and these use cases change it. A save carries the
version the page showed: a save from an older page is refused (StaleSettings), never merged. Every
save is checked field by field (InvalidSettings names each field and the fix) and goes into the audit
trail. Running processes read the store at their next use (managed.current_settings), the scheduler
within a minute (digest.schedule). The page's schedule is weekday(s) + a build time + a later send
time on the same day(s): what two crontab lines say; other cadences stay possible in digest.toml.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime
from email.utils import parseaddr
from typing import Any, NoReturn

from sqlalchemy import Engine

from ..addresses import address_problem
from ..branding import LOGO_NAME, AccentCheck, LogoRefused, check_accent, check_branding_fields, read_logo
from ..config import BrandingSettings, ConfigError, ScheduleSettings, Settings
from ..models import Account
from ..store.locks import JOBS_TABLE, active_scheduler
from ..store.managed_settings import (
    StaleSection,
    StoredSection,
    branding_file,
    read_section,
    save_branding_file,
    save_section,
)
from ..store.runs import job_store_next_runs
from ..timetable import build_trigger, crontab_trigger, fetch_trigger, next_fire_time, send_trigger
from ..toml_text import toml_value
from .audit import record
from .editions import Everyone, edition_for
from .issues import list_issues
from .managed import current_settings, provisioned
from .runs import JOB_BUILD, JOB_FETCH, JOB_SEND

SOURCE_TOML, SOURCE_STORE = "digest.toml", "store"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES = dict(zip(WEEKDAYS, ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
                     strict=True))
_TIME = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
_WEEKLY = re.compile(r"(\d{1,2}) (\d{1,2}) \* \* ([a-z,]+)")
MAX_STAFF = 50

__all__ = ["InvalidSettings", "LogoRefused", "SettingsProvisioned", "StaleSettings"]


class SettingsProvisioned(Exception):
    """digest.toml has this section's table, so it cannot be changed here."""

    def __init__(self, section: str) -> None:
        super().__init__(f"the {section} is managed in digest.toml ([{section}] table): change it there, or remove "
                         f"the [{section}] table from it to manage the {section} in the admin")


class InvalidSettings(ValueError):
    """Values that cannot be saved; `problems` maps each field to what is wrong and how to fix it."""

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{name.replace('_', ' ')}: {text}" for name, text in problems.items()))


class StaleSettings(Exception):
    """The section was saved by someone else since the page was shown."""


@dataclass(frozen=True)
class Managed:
    """Where a section comes from and which stored version the page shows."""

    source: str  # SOURCE_TOML or SOURCE_STORE
    version: int  # 0 while the store holds nothing (the defaults are in force)
    updated_at: datetime | None
    updated_by: str

    @property
    def read_only(self) -> bool:
        return self.source == SOURCE_TOML


@dataclass(frozen=True)
class ScheduleForm:
    days: tuple[str, ...]
    build_time: str
    send_time: str
    skip_if_empty: bool
    auto_approve: bool
    fetch_every_hours: int
    staff: tuple[str, ...]
    custom: bool  # the crontab lines say more than weekdays and a time: shown as they are


@dataclass(frozen=True)
class ScheduleView:
    managed: Managed
    schedule: ScheduleSettings
    form: ScheduleForm
    timezone: str
    timezone_words: str  # "Brussels time"
    next_runs: list[tuple[str, str]]  # ("build", "Monday 7 December at 09:00 (Brussels time)")
    scheduler: str | None  # the active scheduler, if one runs
    pending: bool  # the running scheduler's job store still holds the old times (it follows within a minute)
    problems: list[str]


@dataclass(frozen=True)
class BrandingView:
    managed: Managed
    branding: BrandingSettings
    accent: AccentCheck
    logo_url: str  # in force: branding's, else site.logo_url
    postal_address: str
    sender_name: str
    uploaded: bool  # the logo is a file uploaded here
    preview_issue: int | None  # the newest issue, shown with this branding


def _managed(settings: Settings, engine: Engine, section: str) -> tuple[Managed, StoredSection]:
    stored = read_section(engine, section)
    source = SOURCE_TOML if provisioned(settings, section) else SOURCE_STORE
    return Managed(source, stored.version, stored.updated_at, stored.updated_by), stored


def _refuse_if_provisioned(settings: Settings, section: str) -> None:
    if provisioned(settings, section):
        raise SettingsProvisioned(section)


def _store(engine: Engine, section: str, value: dict[str, Any], version: int, actor: Account | None,
           now: datetime, changed: dict[str, Any]) -> int:
    who = actor.label if actor else "command line"
    try:
        new = save_section(engine, section, value, version, now, who)
    except StaleSection:  # saved by someone else between our read and our write
        _stale(engine, section, version, read_section(engine, section))
    record(engine, actor, f"settings.{section}", target=section, detail={"version": new, "changed": changed}, now=now)
    return new


# --- the schedule ----------------------------------------------------------------------------------

def schedule_overview(settings: Settings, engine: Engine, now: datetime) -> ScheduleView:
    """The schedule page: the settings in force, where they come from, and the next runs in plain words."""
    settings = current_settings(settings, engine)
    managed, stored = _managed(settings, engine, "schedule")
    tz_words = timezone_words(settings.site.timezone)
    runs, problems = [], []
    computed: dict[str, datetime | None] = {}
    for job, make in ((JOB_BUILD, build_trigger), (JOB_SEND, send_trigger), (JOB_FETCH, fetch_trigger)):
        try:
            trigger = make(settings)
            computed[job] = trigger.get_next_fire_time(None, now) if job == JOB_FETCH else next_fire_time(trigger, now)
        except ConfigError as exc:
            problems.append(str(exc))
            computed[job] = None
    stored_runs = job_store_next_runs(engine, JOBS_TABLE)
    if JOB_FETCH in stored_runs and stored_runs[JOB_FETCH]:  # fetches count from the scheduler's start, not a clock time
        computed[JOB_FETCH] = stored_runs[JOB_FETCH]
    for job in (JOB_BUILD, JOB_SEND, JOB_FETCH):
        at = computed[job]
        if job == JOB_FETCH and not stored_runs.get(JOB_FETCH):
            hours = settings.schedule.fetch_every_hours
            runs.append((job, f"every {hours} hours, counted from when the scheduler starts"))
            continue
        runs.append((job, when_words(at, settings, now) if at else "never (see the problem above)"))
    pending = any(job in stored_runs and stored_runs[job] and computed[job] and stored_runs[job] != computed[job]
                  for job in (JOB_BUILD, JOB_SEND))
    return ScheduleView(managed, settings.schedule, schedule_form(settings.schedule, settings.schedule.skip_if_empty),
                        settings.site.timezone, tz_words, runs, active_scheduler(engine), pending, problems)


def schedule_form(schedule: ScheduleSettings, skip: bool) -> ScheduleForm:
    """The schedule as the page's fields; `custom` when its crontab lines say more than weekdays and times."""
    build, send = _weekly(schedule.cron), _weekly(schedule.send_cron)
    custom = build is None or send is None or build[0] != send[0]
    days, build_time = build if build else (("mon",), "09:00")
    send_time = send[1] if send else "11:00"
    return ScheduleForm(tuple(days), build_time, send_time, skip, schedule.auto_approve, schedule.fetch_every_hours,
                        tuple(schedule.staff), custom)


def _weekly(cron: str) -> tuple[tuple[str, ...], str] | None:
    match = _WEEKLY.fullmatch(" ".join(cron.lower().split()))
    if not match:
        return None
    minute, hour, days = int(match[1]), int(match[2]), tuple(match[3].split(","))
    if minute > 59 or hour > 23 or not set(days) <= set(WEEKDAYS):
        return None
    return tuple(d for d in WEEKDAYS if d in days), f"{hour:02d}:{minute:02d}"


def check_schedule_fields(form: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The stored values for the page's fields, and the problems by field (empty when all is well)."""
    problems: dict[str, str] = {}
    days = [d for d in WEEKDAYS if d in set(form.get("days") or ())]
    if not days:
        problems["days"] = "choose at least one weekday for the build"
    times = {}
    for name in ("build_time", "send_time"):
        value = str(form.get(name, "")).strip()
        if not _TIME.fullmatch(value):
            problems[name] = f"{value[:10]!r} is not a time: write it as HH:MM on the 24-hour clock, e.g. 09:00"
        times[name] = value
    if "build_time" not in problems and "send_time" not in problems and times["send_time"] <= times["build_time"]:
        problems["send_time"] = (f"the send time ({times['send_time']}) must be after the build time "
                                 f"({times['build_time']}) on the same day, so the draft can be approved in between")
    hours = str(form.get("fetch_every_hours", "")).strip()
    if not hours.isdigit() or not 1 <= int(hours) <= 168:
        problems["fetch_every_hours"] = "give a whole number of hours from 1 to 168"
    staff = [line.strip() for line in re.split(r"[\n,;]", str(form.get("staff", ""))) if line.strip()]
    bad = [a for a in staff if address_problem(a)]
    if bad:
        problems["staff"] = f"{bad[0][:80]!r} is not an email address: one address per line"
    elif len(staff) > MAX_STAFF:
        problems["staff"] = f"{len(staff)} addresses; at most {MAX_STAFF}: use a mailing list's address instead"
    if problems:
        return {}, problems

    def cron(time: str) -> str:
        hour, minute = time.split(":")
        return f"{int(minute)} {int(hour)} * * {','.join(days)}"

    return {"cron": cron(times["build_time"]), "send_cron": cron(times["send_time"]),
            "skip_if_empty": _checked(form.get("skip_if_empty")), "auto_approve": _checked(form.get("auto_approve")),
            "fetch_every_hours": int(hours), "staff": list(dict.fromkeys(staff))}, {}


def _checked(value: Any) -> bool:
    return value in (True, "yes", "on", "true", "1")


def save_schedule(settings: Settings, engine: Engine, form: Mapping[str, Any], version: int,
                  actor: Account | None, now: datetime) -> bool:
    """Save the page's schedule if the store still holds `version`; False when nothing changed.

    SettingsProvisioned, InvalidSettings (by field) or StaleSettings otherwise.
    """
    _refuse_if_provisioned(settings, "schedule")
    values, problems = check_schedule_fields(form)
    if problems:
        raise InvalidSettings(problems)
    for key in ("cron", "send_cron"):  # what the scheduler will read must load
        crontab_trigger(values[key], settings.site.tz, f"schedule.{key}")
    stored = read_section(engine, "schedule")
    if stored.version != version:
        return _stale(engine, "schedule", version, stored)
    in_force = current_settings(settings, engine).schedule
    before = {f.name: getattr(in_force, f.name) for f in fields(in_force)}
    changed = {k: [before.get(k), v] for k, v in values.items() if before.get(k) != v}
    if not changed:
        return False
    _store(engine, "schedule", {**stored.value, **values}, version, actor, now, changed)
    return True


def _stale(engine: Engine, section: str, version: int, stored: StoredSection) -> NoReturn:
    by = f" by {stored.updated_by}" if stored.updated_by else ""
    raise StaleSettings(f"Not saved: the {section} was changed{by} since this page was shown (you edited version "
                        f"{version}, the current one is {stored.version}). Check the values shown now, then make "
                        "your change again.")


def timezone_words(name: str) -> str:
    """"Europe/Brussels" → "Brussels time"; "UTC" stays "UTC"."""
    if "/" not in name:
        return name
    return name.rsplit("/", 1)[1].replace("_", " ") + " time"


def when_words(at: datetime, settings: Settings, now: datetime) -> str:
    """"Monday 7 December at 09:00 (Brussels time)", with the year when it is not this year's."""
    local, today = at.astimezone(settings.site.tz), now.astimezone(settings.site.tz)
    year = f" {local.year}" if local.year != today.year else ""
    return f"{local:%A} {local.day} {local:%B}{year} at {local:%H:%M} ({timezone_words(settings.site.timezone)})"


# --- the branding ----------------------------------------------------------------------------------

def branding_overview(settings: Settings, engine: Engine) -> BrandingView:
    """The branding page: the values in force, where they come from, the accent's contrast, the issue previewed."""
    settings = current_settings(settings, engine)
    managed, _ = _managed(settings, engine, "branding")
    branding = settings.branding
    try:
        accent = check_accent(branding.accent_color)
    except ValueError:  # a provisioned file's value is checked at load; keep the page up whatever it holds
        accent = check_accent(BrandingSettings().accent_color)
    newest = list_issues(engine)
    return BrandingView(managed, branding, accent, branding.logo_url or settings.site.logo_url,
                        branding.postal_address or settings.site.postal_address,
                        branding.sender_name or sender_display_name(settings),
                        "/branding/logo-" in branding.logo_url, newest[0].number if newest else None)


def sender_display_name(settings: Settings) -> str:
    """The display name in force for the From header: branding.sender_name, else delivery.sender's."""
    return settings.branding.sender_name or parseaddr(settings.delivery.sender)[0]


def save_branding(settings: Settings, engine: Engine, form: Mapping[str, Any], version: int,
                  actor: Account | None, now: datetime) -> bool:
    """Save the page's branding if the store still holds `version`; False when nothing changed."""
    _refuse_if_provisioned(settings, "branding")
    values, problems = check_branding_fields(form, settings.web.base_url)
    if problems:
        raise InvalidSettings(problems)
    return _save_branding_values(settings, engine, values, version, actor, now)


def _save_branding_values(settings: Settings, engine: Engine, values: dict[str, str], version: int,
                          actor: Account | None, now: datetime) -> bool:
    stored = read_section(engine, "branding")
    if stored.version != version:
        return _stale(engine, "branding", version, stored)
    before = current_settings(settings, engine).branding
    changed = {k: [getattr(before, k), v] for k, v in values.items() if getattr(before, k) != v}
    if not changed:
        return False
    _store(engine, "branding", {**stored.value, **values}, version, actor, now, changed)
    return True


def upload_logo(settings: Settings, engine: Engine, data: bytes, alt: str, version: int,
                actor: Account | None, now: datetime) -> str:
    """Keep an uploaded logo and make it the masthead's; returns its public path (/branding/logo-….png).

    LogoRefused (not an image we take: too large, SVG, unknown bytes, absurd size), InvalidSettings
    (the alt text), StaleSettings, SettingsProvisioned.
    """
    _refuse_if_provisioned(settings, "branding")
    image = read_logo(data)
    digest = hashlib.sha256(data).hexdigest()
    name = f"logo-{digest[:8]}.{image.kind}"
    current = current_settings(settings, engine).branding
    values, problems = check_branding_fields({**{f.name: getattr(current, f.name) for f in fields(current)},
                                              "logo_alt": alt, "logo_url": ""})
    if problems:
        raise InvalidSettings({k: v for k, v in problems.items() if k == "logo_alt"} or problems)
    save_branding_file(engine, name, image.content_type, data, digest, now)
    path = f"/branding/{name}"
    values["logo_url"] = settings.web.base_url.rstrip("/") + path
    _save_branding_values(settings, engine, values, version, actor, now)
    return path


def logo_file(engine: Engine, name: str) -> tuple[str, bytes] | None:
    """(content type, bytes) of an uploaded logo by its public name, or None."""
    if not LOGO_NAME.fullmatch(name):
        return None
    found = branding_file(engine, name)
    return None if found is None else (found.content_type, found.data)


def preview_branding(settings: Settings, engine: Engine, form: Mapping[str, Any] | None) -> str:
    """The newest issue's full edition with these branding values (unsaved), or the saved ones when `form` is None.

    InvalidSettings when the values cannot be used; LookupError when there is no issue yet.
    """
    settings = current_settings(settings, engine)
    if form is not None:
        values, problems = check_branding_fields(form, settings.web.base_url)
        if problems:
            raise InvalidSettings(problems)
        settings = replace(settings, branding=replace(settings.branding, **values))
    newest = list_issues(engine)
    if not newest:
        raise LookupError("no issue yet: the preview shows the newest issue once one is built")
    return edition_for(settings, engine, newest[0].number, Everyone()).html


# --- `digest config export` ------------------------------------------------------------------------

def settings_as_toml(settings: Settings, engine: Engine) -> str:
    """The store-managed schedule and branding in force, as [schedule] and [branding] tables for digest.toml."""
    settings = current_settings(settings, engine)
    out: list[str] = []
    for section, values in (("schedule", settings.schedule), ("branding", settings.branding)):
        if provisioned(settings, section):
            continue
        stored = read_section(engine, section)
        by = " ".join(stored.updated_by.split())  # one comment line, whatever the name holds
        note = f"version {stored.version}, saved by {by}" if stored.version else "defaults: never edited"
        out += [f"# {section}: managed in the store ({note})", f"[{section}]"]
        out += [f"{f.name} = {toml_value(getattr(values, f.name))}" for f in fields(values)]
        out.append("")
    return "\n".join(out)
