"""The notes digest sends one person at a time, built by message.build_note like every other email.

- `confirmation_message`: the double opt-in email, in the subscriber's language, as text and as
  HTML with a button (templates/note.mjml.j2, overridable like the edition). Nothing a visitor
  typed goes into it but the address: the form's name is applied on confirmation only, so the
  subscribe form cannot be used to mail a stranger a message of someone else's making.
- `welcome_message`: the optional welcome after confirming (web.welcome_email), HTML and text.
- `staff_note_message`: "draft N is ready for review", to one staff address (English).
- `account_link_message`: a staff account's invite or password-reset link (English).
"""

from __future__ import annotations

import logging
from datetime import datetime
from email.utils import parseaddr

from ..config import Settings
from ..i18n import elide
from ..models import Subscriber
from ..render import RenderError, render_note
from .message import build_note
from .transport import OutgoingMessage

log = logging.getLogger(__name__)

# The confirmation email's words; {site}, {url}, {hours} and {address} are filled in. "body" is the
# text part; the HTML part (note.mjml.j2) puts "heading", "ask", a "button" and "note" around the link.
CONFIRMATION_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "heading": "Confirm your subscription",
        "ask": "Please confirm that you want to receive the {site} digest at this address.",
        "button": "Confirm my subscription",
        "note": "The link stays valid for {hours} hours. If you did not ask for this, ignore this email: nothing "
                "will be sent to you.",
        "subject": "Please confirm your subscription to the {site} digest",
        "body": "Hello,\n\nplease confirm that you want to receive the {site} digest at this address by opening "
                "this link:\n\n{url}\n\nThe link stays valid for {hours} hours. If you did not ask for this, ignore "
                "this email: nothing will be sent to you.\n\n{site}\n{address}\n",
    },
    "fr": {
        "heading": "Confirmez votre abonnement",
        "ask": "Veuillez confirmer que vous souhaitez recevoir la lettre de {site} à cette adresse.",
        "button": "Confirmer mon abonnement",
        "note": "Le lien reste valable {hours} heures. Si vous n’avez rien demandé, ignorez ce courriel : rien ne "
                "vous sera envoyé.",
        "subject": "Confirmez votre abonnement à la lettre de {site}",
        "body": "Bonjour,\n\nveuillez confirmer que vous souhaitez recevoir la lettre de {site} à cette adresse en "
                "ouvrant ce lien :\n\n{url}\n\nLe lien reste valable {hours} heures. Si vous n’avez rien demandé, "
                "ignorez ce courriel : rien ne vous sera envoyé.\n\n{site}\n{address}\n",
    },
    "de": {
        "heading": "Bitte bestätigen Sie Ihr Abonnement",
        "ask": "Bitte bestätigen Sie, dass Sie den Newsletter von {site} an diese Adresse erhalten möchten.",
        "button": "Abonnement bestätigen",
        "note": "Der Link ist {hours} Stunden gültig. Falls Sie nichts angefordert haben, ignorieren Sie diese "
                "E-Mail: Sie erhalten nichts.",
        "subject": "Bitte bestätigen Sie Ihr Abonnement des Newsletters von {site}",
        "body": "Guten Tag,\n\nbitte bestätigen Sie, dass Sie den Newsletter von {site} an diese Adresse erhalten "
                "möchten, indem Sie diesen Link öffnen:\n\n{url}\n\nDer Link ist {hours} Stunden gültig. Falls Sie "
                "nichts angefordert haben, ignorieren Sie diese E-Mail: Sie erhalten nichts.\n\n{site}\n{address}\n",
    },
}


def confirmation_message(settings: Settings, subscriber: Subscriber, url: str,
                         now: datetime | None = None) -> OutgoingMessage:
    """The email asking `subscriber` (their address only) to open `url`, in their language.

    Raises HeaderError for an unusable address or sender, DkimError for unusable DKIM settings.
    """
    language = subscriber.language if subscriber.language in CONFIRMATION_TEXTS else "en"
    words = CONFIRMATION_TEXTS[language]
    site = settings.site.name
    hours = settings.web.confirm_hours

    def say(key: str) -> str:  # the site's name goes into sentences: French elides before it ("d’Europa")
        return elide(words[key].format(site=site, url=url, hours=hours, address=settings.postal_address),
                     language)

    subject = say("subject")
    try:
        html = render_note(settings, language, subject=subject, preheader=say("ask"), heading=say("heading"),
                           paragraphs=[say("ask")], button_text=say("button"), button_url=url, small=[say("note")])
    except RenderError as exc:  # an overriding note.mjml.j2 that does not compile: the text part still goes
        log.error("the confirmation email goes as text only: %s", exc)
        html = ""
    return build_note(settings, to=subscriber.email, subject=subject, text=say("body"), language=language, now=now,
                      html=html)


# The welcome email's words (web.welcome_email); {site} is filled in.
WELCOME_TEXTS: dict[str, dict[str, str]] = {
    "en": {"subject": "Welcome to the {site} digest", "heading": "Welcome to the {site} digest",
           "body": "Thank you for confirming. Each week the digest brings our new policy briefs, upcoming events "
                   "and where our work was in the news, grouped by series.",
           "button": "Choose your series and language",
           "note": "Every issue has a link to change your choices and one to unsubscribe with a single click."},
    "fr": {"subject": "Bienvenue dans la lettre de {site}", "heading": "Bienvenue dans la lettre de {site}",
           "body": "Merci de votre confirmation. Chaque semaine, la lettre présente nos nouvelles notes, nos "
                   "prochains événements et nos passages dans les médias, regroupés par série.",
           "button": "Choisir vos séries et votre langue",
           "note": "Chaque numéro contient un lien pour modifier vos choix et un autre pour vous désabonner en un clic."},
    "de": {"subject": "Willkommen beim Newsletter von {site}", "heading": "Willkommen beim Newsletter von {site}",
           "body": "Danke für Ihre Bestätigung. Jede Woche bringt der Newsletter unsere neuen Policy Briefs, kommende "
                   "Veranstaltungen und unsere Arbeit in den Medien, geordnet nach Reihen.",
           "button": "Reihen und Sprache wählen",
           "note": "Jede Ausgabe enthält einen Link, um Ihre Auswahl zu ändern, und einen, um sich mit einem Klick "
                   "abzumelden."},
}


def welcome_message(settings: Settings, subscriber: Subscriber, preferences_url: str,
                    now: datetime | None = None) -> OutgoingMessage:
    """The welcome for a reader who just confirmed, in their language, with their preferences link.

    Raises HeaderError for an unusable address or sender, DkimError for unusable DKIM settings,
    RenderError when an overriding note.mjml.j2 does not compile.
    """
    language = subscriber.language if subscriber.language in WELCOME_TEXTS else "en"
    words = {k: elide(v.format(site=settings.site.name), language) for k, v in WELCOME_TEXTS[language].items()}
    html = render_note(settings, language, subject=words["subject"], preheader=words["body"],
                       heading=words["heading"], paragraphs=[words["body"]], button_text=words["button"],
                       button_url=preferences_url, small=[words["note"]])
    text = f"{words['heading']}\n\n{words['body']}\n\n{words['button']}:\n{preferences_url}\n\n{words['note']}\n\n" \
           f"{settings.site.name}\n{settings.postal_address}\n"
    return build_note(settings, to=subscriber.email, subject=words["subject"], text=text, language=language, now=now,
                      html=html)


def staff_note_message(settings: Settings, address: str, number: int, link: str,
                       now: datetime | None = None) -> OutgoingMessage:
    """The note telling one staff `address` ("Name <a@b>" or "a@b") that draft `number` is ready at `link`."""
    name, email = parseaddr(address)
    approval = "It goes out automatically" if settings.schedule.auto_approve else \
        "It goes out at the next send time once approved (at once if approved after it)"
    site = settings.site.name
    text = (f"Draft {number} of the {site} digest is ready.\n\n"
            f"Preview, edit and approve it here:\n{link}\n\n{approval}.\n")
    return build_note(settings, to=email or address, name=name,
                      subject=f"{site} digest: draft {number} is ready for review", text=text, language="en", now=now)


def account_link_message(settings: Settings, to: str, link: str, hours: int, invite: bool,
                         now: datetime | None = None) -> OutgoingMessage:
    """The email carrying a staff account's set-password `link`: an invitation, or a reset asked for."""
    site = settings.site.name
    if invite:
        subject = f"You are invited to the {site} digest admin"
        opening = f"You have an account on the {site} digest admin. Choose your password here:"
    else:
        subject = f"Reset your password for the {site} digest admin"
        opening = ("Someone asked to reset the password of your account on the "
                   f"{site} digest admin. Choose a new password here:")
    text = (f"Hello,\n\n{opening}\n\n{link}\n\nThe link works once, for {hours} hours. If you did not expect "
            "this email, ignore it: nothing changes.\n")
    return build_note(settings, to=to, subject=subject, text=text, language="en", now=now)
