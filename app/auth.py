"""Who is using the dashboard, what they may open, and the audit trail of what they saw.

The mode is resolved on every run at the top of app/main.py, before any page is built:
- oidc: the Streamlit secrets hold an `[auth]` section: `st.login()` / `st.user`; the role comes from the
  `[medfuse_lens.roles]` table (email = role), else `[medfuse_lens] default_role` (clinician; "none" refuses).
- local: $MEDFUSE_LENS_USERS names a users file (medfuse_core.users): a sign-in form; wrong passwords
  for one name make it wait, longer each time (medfuse_core.throttle). Only when served by app/server.py
  (sessions bound to the browser, app/binding.py), or with MEDFUSE_LENS_UNBOUND_SIGN_IN=1 (development, tests).
- dev: neither, or MEDFUSE_LENS_DEV=1: no sign-in, user "dev" with the researcher role, and only while the
  server listens on a loopback address; otherwise the app says how to fix it and stops.
Roles: a clinician sees the worklist, patient review and model card and exports reports; a researcher also
the disentanglement lab and the upload page. Pages a role lacks stay routable but hidden, and guard
themselves with `require_role`, so a typed URL says "not permitted" instead of showing the page.
The decisions (`resolve_mode`, `is_loopback`, `oidc_role`) are plain functions; the rest draws them.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import streamlit as st

from app import binding
from medfuse_core import audit
from medfuse_core.throttle import FAILED_SIGN_IN_AUDIT, SIGN_IN_THROTTLE
from medfuse_core.users import ROLES, USERS_ENV, UsersFileError, authenticate, load_users, role_allows

DEV_ENV = "MEDFUSE_LENS_DEV"
# 1: local sign-in without app/server.py's browser binding (plain `streamlit run app/main.py`, AppTest): the
# sign-in then lives in the Streamlit session, which anyone presenting its id can ride. Development and tests only.
UNBOUND_ENV = "MEDFUSE_LENS_UNBOUND_SIGN_IN"
UNBOUND_REFUSED = ("Sign-in is configured ({users}) but this server does not bind sessions to the browser, so a "
                   "signed-in session could be taken over by anyone who learns its id. Serve the dashboard with "
                   "`streamlit run app/server.py` (same options) instead of `streamlit run app/main.py`.")
DEV_BANNER = "Development mode: no sign-in; serving on 127.0.0.1 only"
VIEWER_KEY = "_auth_viewer"  # session_state: the signed-in Viewer
AUDITED_KEY = "_auth_audited"  # session_state: the (action, patient, key) already logged with once=
WRONG_LOGIN = "wrong user name or password"
TOO_MANY_TRIES = "too many wrong passwords for this user name: try again in {seconds} s"
DEFAULT_OIDC_ROLE = "clinician"

__all__ = ["Viewer", "resolve_mode", "is_loopback", "oidc_role", "sign_in", "current_viewer", "require_role",
           "sidebar_account", "audit_event", "audited", "role_allows", "DEV_BANNER"]


@dataclass(frozen=True)
class Viewer:
    """The person at the screen (or 'dev'), their role and how they signed in."""

    name: str
    role: str
    mode: str  # "oidc" | "local" | "dev"


DEV_VIEWER = Viewer("dev", "researcher", "dev")


# ------------------------------------------------------------------------------------- decisions


def resolve_mode(env: Mapping[str, str], has_oidc: bool) -> str:
    """'dev' when MEDFUSE_LENS_DEV=1 or nothing is configured; else 'oidc' (secrets [auth]) or 'local' (users file)."""
    if env.get(DEV_ENV, "").strip() == "1":
        return "dev"
    if has_oidc:
        return "oidc"
    if env.get(USERS_ENV, "").strip():
        return "local"
    return "dev"


def is_loopback(address: str | None) -> bool:
    """Whether the server address only accepts this machine (unset or '' means every interface: no)."""
    if not address:
        return False
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def oidc_role(email: str | None, roles: Mapping[str, Any], default: str | None = DEFAULT_OIDC_ROLE) -> str | None:
    """The role of an OIDC account: its entry in `roles` (emails compared case-insensitively), else `default`
    (None or 'none': no role). ValueError when the configured role is not one of ROLES."""
    by_email = {str(k).strip().lower(): str(v).strip() for k, v in roles.items()}
    role = by_email.get((email or "").strip().lower(), default)
    if role in (None, "", "none"):
        return None
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    return role


# ------------------------------------------------------------------------------------- sign-in


def _secrets_section(name: str) -> Mapping[str, Any] | None:
    """A top-level table of the Streamlit secrets, or None (no secrets file at all is not an error)."""
    try:
        section = st.secrets.get(name)
    except FileNotFoundError as exc:  # Streamlit's StreamlitSecretNotFoundError: no file, or one it cannot parse
        if getattr(exc, "error_id", None) == "no-secrets-found":
            return None
        st.error(f"The Streamlit secrets cannot be read, so sign-in cannot be set up: {exc}", icon=":material/error:")
        st.stop()
    return section if isinstance(section, Mapping) and section else None


def current_viewer() -> Viewer | None:
    viewer = st.session_state.get(VIEWER_KEY)
    return viewer if isinstance(viewer, Viewer) else None


def sign_in() -> Viewer:
    """The viewer of this run; until someone is signed in it draws the sign-in and stops the script."""
    mode = resolve_mode(os.environ, _secrets_section("auth") is not None)
    if mode == "dev":
        viewer = _dev_viewer()
    elif mode == "oidc":
        viewer = _oidc_viewer()
    else:
        viewer = _local_viewer(os.environ[USERS_ENV].strip())
    st.session_state[VIEWER_KEY] = viewer
    return viewer


def _dev_viewer() -> Viewer:
    address = st.get_option("server.address")
    if not is_loopback(address):
        where = f"on {address!r}" if address else "on every network interface (server.address is not set)"
        st.error(f"This dashboard is serving {where} without sign-in. Configure sign-in ([auth] in "
                 f".streamlit/secrets.toml, or {USERS_ENV}) or bind to 127.0.0.1 (`--server.address 127.0.0.1`)"
                 + (f", and unset {DEV_ENV}." if os.environ.get(DEV_ENV, "").strip() == "1" else "."),
                 icon=":material/lock:")
        st.stop()
    return DEV_VIEWER


def _browser_token() -> str | None:
    """This browser's binding cookie, as sent on the websocket now attached to the session (app/binding.py)."""
    try:
        return st.context.cookies.get(binding.COOKIE)
    except Exception:  # no server context (bare script runs)
        return None


def _local_viewer(users_path: str) -> Viewer:
    try:
        users = load_users(users_path)
    except UsersFileError as exc:
        st.error(f"Sign-in is not available: the users file cannot be used. {exc}", icon=":material/error:")
        st.stop()
    bound = binding.gate_active()
    if not bound and os.environ.get(UNBOUND_ENV, "").strip() != "1":
        st.error(UNBOUND_REFUSED.format(users=USERS_ENV), icon=":material/lock:")
        st.stop()
    token = _browser_token() if bound else None
    # Bound (app/server.py): the sign-in belongs to the browser's HttpOnly cookie, looked up on every run, so a
    # websocket presenting someone's session id without their cookie is not them; a reload keeps the cookie.
    # Unbound (only with MEDFUSE_LENS_UNBOUND_SIGN_IN=1: AppTest, development): it lives in the session's state.
    viewer = binding.BROWSER_SESSIONS.viewer_for(token) if bound else current_viewer()
    if viewer is not None and viewer.mode == "local":
        user = users.get(viewer.name)
        if user is not None:  # the role is re-read from the file on every run, so changes apply at once
            return Viewer(user.name, user.role, "local")
        binding.BROWSER_SESSIONS.sign_out(token)  # removed from the file: signed out
    st.session_state.pop(VIEWER_KEY, None)
    st.title("MEDFuse Lens", anchor=False)
    st.caption("Sign in to see patient data.")
    with st.form("sign_in", clear_on_submit=True):
        name = st.text_input("User name", key="sign_in_name", autocomplete="username")
        password = st.text_input("Password", type="password", key="sign_in_password",
                                 autocomplete="current-password")
        submitted = st.form_submit_button("Sign in", type="primary", key="sign_in_submit")
    if submitted:
        # wait check, password check and the record of the outcome are one atomic step per user name
        user, wait = SIGN_IN_THROTTLE.attempt(name, lambda: authenticate(users, name, password))
        if wait > 0:  # the password was not even checked while the name waits
            _log_failure("login_throttled", name, {"mode": "local", "wait_s": round(wait)})
            st.error(TOO_MANY_TRIES.format(seconds=math.ceil(wait)), icon=":material/lock_clock:")
            st.stop()
        if user is None:
            _log_failure("login_failed", name, {"mode": "local"})
            st.error(WRONG_LOGIN, icon=":material/error:")
        elif bound:
            _bind_browser(Viewer(user.name, user.role, "local"), token)
        else:
            _signed_in(Viewer(user.name, user.role, "local"))
            st.rerun()
    st.stop()


def _bind_browser(viewer: Viewer, token: str | None) -> None:
    """Log the sign-in, then send the browser to app/binding.py's BIND_PATH with a one-time ticket: it rotates
    the cookie, records the viewer against the new one and comes back to this page (query kept: ?patient=)."""
    if not binding.BROWSER_SESSIONS.valid(token):
        st.error("This browser did not send the dashboard's session cookie (cookies blocked?). Allow cookies "
                 "for this site and reload the page.", icon=":material/cookie:")
        st.stop()
    _signed_in(viewer)
    ticket = binding.BROWSER_SESSIONS.ticket(viewer, token, _this_page())
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    from streamlit.runtime.scriptrunner import get_script_run_ctx
    from streamlit.url_util import make_url_path

    msg = ForwardMsg()
    msg.auth_redirect.url = make_url_path(st.get_option("server.baseUrlPath") or "", binding.BIND_PATH) + f"?ticket={ticket}"
    ctx = get_script_run_ctx()
    if ctx is not None:
        ctx.enqueue(msg)
    st.caption("Signed in; opening the dashboard...")
    st.stop()


def _this_page() -> str:
    """The path and query of the page being viewed (where the browser returns after signing in)."""
    from urllib.parse import urlencode, urlparse

    try:
        path = urlparse(st.context.url or "").path or "/"
    except Exception:
        path = "/"
    query = urlencode({k: v for k, v in st.query_params.to_dict().items()})
    return binding.safe_next(path + (f"?{query}" if query else ""))


def _oidc_viewer() -> Viewer:
    settings = _secrets_section("medfuse_lens") or {}
    if not st.user.get("is_logged_in"):
        st.title("MEDFuse Lens", anchor=False)
        st.caption("Sign in with your organisation's account to see patient data.")
        if not _authlib_installed():
            st.error("Sign-in is configured ([auth] in the secrets) but Authlib is not installed: "
                     "`pip install Authlib` (1.3.2 or later), then restart.", icon=":material/error:")
        else:
            provider = settings.get("provider")
            st.button("Sign in", type="primary", key="oidc_sign_in", on_click=st.login,
                      args=(provider,) if provider else None)
        st.stop()
    email = st.user.get("email")
    name = str(email or st.user.get("name") or st.user.get("sub") or "unknown")
    try:
        role = oidc_role(email, settings.get("roles") or {}, settings.get("default_role", DEFAULT_OIDC_ROLE))
    except ValueError as exc:
        st.error(f"Secrets [medfuse_lens.roles] / default_role for {name}: {exc}.", icon=":material/error:")
        st.stop()
    if role is None:
        st.error(f"Not permitted: the account {name} has no role in this dashboard.", icon=":material/lock:")
        st.button("Sign out", key="oidc_sign_out_norole", on_click=st.logout)
        st.stop()
    viewer = Viewer(name, role, "oidc")
    if current_viewer() != viewer:  # first run of this session with this account
        _signed_in(viewer)
    return viewer


def _signed_in(viewer: Viewer) -> None:
    """Log the sign-in, then remember the viewer; a sign-in that cannot be logged does not happen."""
    try:
        audit.append("login", user=viewer.name, role=viewer.role, detail={"mode": viewer.mode})
    except audit.AuditError as exc:
        st.error(f"Not signed in: the audit log could not be written: {exc}.", icon=":material/error:")
        st.stop()
    st.session_state.pop(AUDITED_KEY, None)
    st.session_state[VIEWER_KEY] = viewer


def _authlib_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("authlib") is not None


def _sign_out() -> None:
    viewer = current_viewer()
    if viewer is not None:
        _log_quietly("logout", viewer.name, viewer.role, {"mode": viewer.mode})
    if binding.gate_active():
        binding.BROWSER_SESSIONS.sign_out(_browser_token())
    for key in (VIEWER_KEY, AUDITED_KEY):
        st.session_state.pop(key, None)
    if viewer is not None and viewer.mode == "oidc":
        st.logout()


def sidebar_account(viewer: Viewer) -> None:
    """Who is signed in, with which role, and the sign-out button (none in dev mode)."""
    sb = st.sidebar
    if viewer.mode == "dev":
        sb.caption(f"User **{viewer.name}** ({viewer.role}), development mode: no sign-in")
        return
    sb.caption(f"Signed in as **{viewer.name}** ({viewer.role})")
    if viewer.mode == "local" and not binding.gate_active():
        sb.caption("This session is not bound to the browser: serve with `streamlit run app/server.py`.")
    sb.button("Sign out", key="sign_out", icon=":material/logout:", on_click=_sign_out)


def require_role(role: str) -> Viewer:
    """Stop the page with 'Not permitted' unless the viewer has `role` (or a higher one)."""
    viewer = current_viewer()
    if viewer is None or not role_allows(viewer.role, role):
        who = f"{viewer.name} ({viewer.role})" if viewer else "nobody signed in"
        st.error(f"Not permitted: this page is for the {role} role; you are {who}.", icon=":material/lock:")
        st.stop()
    return viewer


# ---------------------------------------------------------------------------------------- audit


def _log_failure(action: str, name: str, detail: dict[str, Any]) -> None:
    """A failed or throttled sign-in, within the process's budget (FAILED_SIGN_IN_AUDIT): past it, attempts
    are counted and the count is written with the next entry that passes (`left_out`)."""
    allowed, left_out = FAILED_SIGN_IN_AUDIT.take()
    if allowed:
        _log_quietly(action, name.strip()[:64], None, {**detail, **({"left_out": left_out} if left_out else {})})


def _log_quietly(action: str, user: str, role: str | None, detail: dict[str, Any]) -> None:
    """For entries whose loss must not block the page (failed sign-in, sign-out)."""
    try:
        audit.append(action, user=user, role=role, detail=detail)
    except audit.AuditError:
        pass


def audit_event(action: str, patient_id: str | None = None, *, once: bool | str = False, required: bool = False,
                **detail: Any) -> bool:
    """Log `action` for the current viewer. `once`: only the first time per session for this action and patient
    (a string adds a key, e.g. an upload's digest). If the log cannot be written the page shows why, and with
    `required` stops, so nothing is shown that was not logged. True when logged (or logged before)."""
    viewer = current_viewer() or DEV_VIEWER
    seen: set = st.session_state.setdefault(AUDITED_KEY, set())
    mark = (action, patient_id, once if isinstance(once, str) else "")
    if once and mark in seen:
        return True
    try:
        audit.append(action, user=viewer.name, role=viewer.role, patient_id=patient_id,
                     detail=detail)
    except audit.AuditError as exc:
        st.error(f"The audit log could not be written: {exc}."
                 + (" Patient data is not shown until it can be." if required else ""), icon=":material/error:")
        if required:
            st.stop()
        return False
    if once:
        seen.add(mark)
    return True


def audited(make: Callable[[], Any], action: str, patient_id: str | None = None, **detail: Any) -> Callable[[], Any]:
    """`make` wrapped so that calling it logs `action` first, as the viewer of this run: for st.download_button's
    deferred `data`, which Streamlit calls on its own thread only when the file is really downloaded."""
    viewer = current_viewer() or DEV_VIEWER

    def logged_then_made() -> Any:
        audit.append(action, user=viewer.name, role=viewer.role, patient_id=patient_id, detail=detail)
        return make()

    return logged_then_made
