"""Regenerate the settings table in docs/configuration.md from digest.config (run by `make docs`)."""

import re
from pathlib import Path

from digest.config import settings_reference_markdown

path = Path(__file__).with_name("configuration.md")
text = path.read_text(encoding="utf-8")
new = re.sub(r"(<!-- settings:start -->\n).*?(<!-- settings:end -->)",
             lambda m: m.group(1) + settings_reference_markdown() + m.group(2), text, flags=re.S)
path.write_text(new, encoding="utf-8")
print(f"updated {path}")
