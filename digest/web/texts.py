"""The public pages' words in English, French and German, and how a page picks its language.

Kept in Python rather than the editions' .po catalogues: these few strings belong to the public web
pages only (the confirmation email's words are digest.deliver.notes'), and a missing key fails
loudly in the tests for every language.
"""

from __future__ import annotations

from ..config import LANGUAGES

LANGUAGE_NAMES = {"en": "English", "fr": "Français", "de": "Deutsch"}

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "skip_text": "Skip to content",
        "subscribe_title": "Subscribe to the digest",
        "subscribe_intro": "A weekly email with our new publications, upcoming events and media mentions.",
        "email_label": "Email address",
        "name_label": "Name (optional)",
        "language_label": "Language of the digest",
        "series_legend": "Series",
        "series_hint": "Tick none to receive every series, including future ones.",
        "sections_legend": "Also include",
        "want_events": "Upcoming events",
        "want_media": "Media mentions",
        "subscribe_button": "Subscribe",
        "privacy_note": "We send a confirmation email first. You can change your choices or unsubscribe with one click from any digest.",
        "check_title": "Check your inbox",
        "check_body": "If this address can receive the digest, we have sent it an email with a link to confirm. The link stays valid for {hours} hours.",
        "confirm_title": "Confirm your subscription",
        "confirm_body": "Please press the button to confirm that you want to receive the digest at {email}.",
        "confirm_button": "Confirm my subscription",
        "confirmed_title": "You are subscribed",
        "confirmed_body": "Thank you. The next digest will come to {email}.",
        "preferences_link": "Change your preferences",
        "preferences_title": "Your digest preferences",
        "preferences_intro": "Choose what the digest sent to {email} contains.",
        "save_button": "Save preferences",
        "saved": "Your preferences are saved.",
        "unsubscribe_heading": "Stop receiving the digest",
        "unsubscribe_title": "Unsubscribe",
        "unsubscribe_body": "Press the button to stop receiving the digest at {email}.",
        "unsubscribe_button": "Unsubscribe",
        "unsubscribed_title": "You are unsubscribed",
        "unsubscribed_body": "You will not receive the digest any more. Nothing else is needed.",
        "inactive_body": "This address does not receive the digest at the moment.",
        "resubscribe_button": "Subscribe again",
        "invalid_title": "This link is not valid",
        "invalid_body": "The link may be incomplete, changed or too old. Nothing was changed. If you want to subscribe, please start again from the subscription form.",
        "start_again": "Go to the subscription form",
        "csrf_title": "Please try again",
        "csrf_body": "The form had expired or cookies are blocked. Reload the page and send it again.",
        "rate_title": "Too many requests",
        "rate_body": "Please wait a moment and try again.",
        "email_error": "Please enter a valid email address.",
        "series_error": "Please choose among the listed series.",
        "language_error": "Please choose one of the listed languages.",
        "error_summary": "Please correct the highlighted field.",
    },
    "fr": {
        "skip_text": "Aller au contenu",
        "subscribe_title": "S’abonner à la lettre d’information",
        "subscribe_intro": "Un courriel hebdomadaire avec nos nouvelles publications, nos prochains événements et nos mentions dans les médias.",
        "email_label": "Adresse électronique",
        "name_label": "Nom (facultatif)",
        "language_label": "Langue de la lettre",
        "series_legend": "Séries",
        "series_hint": "Ne cochez rien pour recevoir toutes les séries, y compris les futures.",
        "sections_legend": "Inclure aussi",
        "want_events": "Événements à venir",
        "want_media": "Dans les médias",
        "subscribe_button": "S’abonner",
        "privacy_note": "Nous envoyons d’abord un courriel de confirmation. Vous pouvez modifier vos choix ou vous désabonner en un clic depuis chaque lettre.",
        "check_title": "Consultez votre boîte de réception",
        "check_body": "Si cette adresse peut recevoir la lettre, nous lui avons envoyé un courriel avec un lien de confirmation. Le lien reste valable {hours} heures.",
        "confirm_title": "Confirmez votre abonnement",
        "confirm_body": "Veuillez appuyer sur le bouton pour confirmer que vous souhaitez recevoir la lettre à l’adresse {email}.",
        "confirm_button": "Confirmer mon abonnement",
        "confirmed_title": "Vous êtes abonné·e",
        "confirmed_body": "Merci. La prochaine lettre sera envoyée à {email}.",
        "preferences_link": "Modifier vos préférences",
        "preferences_title": "Vos préférences",
        "preferences_intro": "Choisissez le contenu de la lettre envoyée à {email}.",
        "save_button": "Enregistrer",
        "saved": "Vos préférences sont enregistrées.",
        "unsubscribe_heading": "Ne plus recevoir la lettre",
        "unsubscribe_title": "Se désabonner",
        "unsubscribe_body": "Appuyez sur le bouton pour ne plus recevoir la lettre à l’adresse {email}.",
        "unsubscribe_button": "Me désabonner",
        "unsubscribed_title": "Vous êtes désabonné·e",
        "unsubscribed_body": "Vous ne recevrez plus la lettre. Vous n’avez rien d’autre à faire.",
        "inactive_body": "Cette adresse ne reçoit pas la lettre actuellement.",
        "resubscribe_button": "Me réabonner",
        "invalid_title": "Ce lien n’est pas valide",
        "invalid_body": "Le lien est peut-être incomplet, modifié ou trop ancien. Rien n’a été modifié. Pour vous abonner, recommencez depuis le formulaire d’abonnement.",
        "start_again": "Aller au formulaire d’abonnement",
        "csrf_title": "Veuillez réessayer",
        "csrf_body": "Le formulaire a expiré ou les cookies sont bloqués. Rechargez la page et envoyez-le à nouveau.",
        "rate_title": "Trop de demandes",
        "rate_body": "Veuillez patienter un instant puis réessayer.",
        "email_error": "Veuillez saisir une adresse électronique valide.",
        "series_error": "Veuillez choisir parmi les séries proposées.",
        "language_error": "Veuillez choisir l’une des langues proposées.",
        "error_summary": "Veuillez corriger le champ signalé.",
    },
    "de": {
        "skip_text": "Zum Inhalt springen",
        "subscribe_title": "Den Newsletter abonnieren",
        "subscribe_intro": "Eine wöchentliche E-Mail mit unseren neuen Publikationen, kommenden Veranstaltungen und Medienberichten.",
        "email_label": "E-Mail-Adresse",
        "name_label": "Name (freiwillig)",
        "language_label": "Sprache des Newsletters",
        "series_legend": "Reihen",
        "series_hint": "Nichts ankreuzen, um alle Reihen zu erhalten, auch künftige.",
        "sections_legend": "Außerdem enthalten",
        "want_events": "Kommende Veranstaltungen",
        "want_media": "In den Medien",
        "subscribe_button": "Abonnieren",
        "privacy_note": "Wir senden zuerst eine Bestätigungs-E-Mail. In jedem Newsletter können Sie Ihre Auswahl ändern oder sich mit einem Klick abmelden.",
        "check_title": "Bitte prüfen Sie Ihr Postfach",
        "check_body": "Falls diese Adresse den Newsletter erhalten kann, haben wir ihr eine E-Mail mit einem Bestätigungslink geschickt. Der Link ist {hours} Stunden gültig.",
        "confirm_title": "Abonnement bestätigen",
        "confirm_body": "Bitte drücken Sie die Schaltfläche, um zu bestätigen, dass Sie den Newsletter an {email} erhalten möchten.",
        "confirm_button": "Abonnement bestätigen",
        "confirmed_title": "Sie haben den Newsletter abonniert",
        "confirmed_body": "Vielen Dank. Der nächste Newsletter geht an {email}.",
        "preferences_link": "Einstellungen ändern",
        "preferences_title": "Ihre Newsletter-Einstellungen",
        "preferences_intro": "Wählen Sie, was der Newsletter an {email} enthält.",
        "save_button": "Einstellungen speichern",
        "saved": "Ihre Einstellungen sind gespeichert.",
        "unsubscribe_heading": "Newsletter nicht mehr erhalten",
        "unsubscribe_title": "Abmelden",
        "unsubscribe_body": "Drücken Sie die Schaltfläche, um den Newsletter an {email} nicht mehr zu erhalten.",
        "unsubscribe_button": "Abmelden",
        "unsubscribed_title": "Sie sind abgemeldet",
        "unsubscribed_body": "Sie erhalten den Newsletter nicht mehr. Sie müssen nichts weiter tun.",
        "inactive_body": "Diese Adresse erhält den Newsletter derzeit nicht.",
        "resubscribe_button": "Wieder abonnieren",
        "invalid_title": "Dieser Link ist nicht gültig",
        "invalid_body": "Der Link ist vielleicht unvollständig, verändert oder zu alt. Es wurde nichts geändert. Um den Newsletter zu abonnieren, beginnen Sie bitte erneut mit dem Anmeldeformular.",
        "start_again": "Zum Anmeldeformular",
        "csrf_title": "Bitte erneut versuchen",
        "csrf_body": "Das Formular ist abgelaufen oder Cookies sind blockiert. Laden Sie die Seite neu und senden Sie es erneut.",
        "rate_title": "Zu viele Anfragen",
        "rate_body": "Bitte warten Sie einen Moment und versuchen Sie es erneut.",
        "email_error": "Bitte geben Sie eine gültige E-Mail-Adresse ein.",
        "series_error": "Bitte wählen Sie unter den angebotenen Reihen.",
        "language_error": "Bitte wählen Sie eine der angebotenen Sprachen.",
        "error_summary": "Bitte korrigieren Sie das markierte Feld.",
    },
}


def texts(language: str) -> dict[str, str]:
    """The pages' words in `language` (English for a language without them)."""
    return TEXTS.get(language, TEXTS["en"])


def negotiate_language(accept_language: str, default: str) -> str:
    """The best of en/fr/de for an Accept-Language header (q-values honoured); `default` otherwise."""
    best, best_q = default, 0.0
    for part in (accept_language or "")[:500].split(","):
        tag, _, params = part.strip().partition(";")
        code = tag.strip().lower()[:2]
        try:
            q = float(params.strip()[2:]) if params.strip().startswith("q=") else 1.0
        except ValueError:
            q = 0.0
        if code in LANGUAGES and q > best_q:
            best, best_q = code, q
    return best
