"""Text from outside (patient ids, file names, URL query values) shown as text, never as markdown.

Why: Streamlit renders markdown in titles, captions, warnings and errors, so `?patient=**Session expired**
- [sign in again](https://evil)` would show a bold link inside the app's own warning. Such values are
either drawn with st.text / dataframes, or passed through `markdown_escape` (every markdown and HTML
character backslash-escaped) after `plain_text` has cut them to a readable length.
"""

from __future__ import annotations

import re

# An underscore between two letters or digits is literal in CommonMark (P_001 stays P_001); elsewhere escaped.
_MARKDOWN = re.compile(r"([\\`*{}\[\]()<>#+!|~:$]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z]))")


def plain_text(value: object, limit: int = 80) -> str:
    """`value` as one line of at most `limit` characters (control characters shown as escapes)."""
    text = str(value)
    cut = len(text) > limit
    text = text[:limit]
    text = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
    return text + ("… (cut)" if cut else "")


def markdown_escape(value: object, limit: int = 80) -> str:
    """`plain_text(value)` with every character markdown (or Streamlit's :colour[] / :material/ directives)
    could act on backslash-escaped, so it is displayed literally."""
    return _MARKDOWN.sub(r"\\\1", plain_text(value, limit))
