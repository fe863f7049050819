"""The only place that knows the order of the stages. Front doors (cli, web, schedule) call these.

fetch_all → build_issue → render → send_issue; each a recipe of explicit calls (after Pelican's run()).
"""

from __future__ import annotations
