"""Sign-in, roles and the audit trail of the dashboard: the pure decisions, then the app headless (AppTest)."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from pathlib import Path

import pytest
from streamlit import config
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from app.auth import DEV_BANNER, TOO_MANY_TRIES, WRONG_LOGIN, is_loopback, oidc_role, resolve_mode
from medfuse_core import audit
from medfuse_core.throttle import SIGN_IN_THROTTLE
from medfuse_core.users import add_user

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
PASSWORDS = {"alice": "alice-pass-1", "rob": "rob-pass-22"}


# ------------------------------------------------------------------------------------- decisions


@pytest.mark.parametrize("env, oidc, mode", [
    ({}, False, "dev"),
    ({"MEDFUSE_LENS_USERS": "/x/users.json"}, False, "local"),
    ({"MEDFUSE_LENS_USERS": "  "}, False, "dev"),
    ({}, True, "oidc"),
    ({"MEDFUSE_LENS_USERS": "/x/users.json"}, True, "oidc"),
    ({"MEDFUSE_LENS_USERS": "/x/users.json", "MEDFUSE_LENS_DEV": "1"}, True, "dev"),
    ({"MEDFUSE_LENS_DEV": "0", "MEDFUSE_LENS_USERS": "/x/users.json"}, False, "local"),
])
def test_resolve_mode(env: dict, oidc: bool, mode: str) -> None:
    assert resolve_mode(env, oidc) == mode


@pytest.mark.parametrize("address, loopback", [
    ("127.0.0.1", True), ("127.0.1.1", True), ("localhost", True), ("::1", True), ("[::1]", True),
    ("0.0.0.0", False), ("", False), (None, False), ("10.1.2.3", False), ("::", False), ("example.org", False),
])
def test_is_loopback(address, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_oidc_role() -> None:
    roles = {"Rob@Example.org": "researcher", "ann@example.org": "clinician"}
    assert oidc_role("rob@example.org", roles) == "researcher"
    assert oidc_role("ann@example.org", roles) == "clinician"
    assert oidc_role("new@example.org", roles) == "clinician"  # the default role
    assert oidc_role("new@example.org", roles, default="none") is None
    assert oidc_role(None, {}, default=None) is None
    with pytest.raises(ValueError, match="'admin' is not one of"):
        oidc_role("x@example.org", {"x@example.org": "admin"})


# ---------------------------------------------------------------------------------------- the app


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path: Path) -> Path:
    """Data only (no model: fast), a fresh audit log, nothing configured, served on loopback."""
    monkeypatch.setenv("MEDFUSE_LENS_CHECKPOINT", "")
    monkeypatch.setenv("MEDFUSE_LENS_AUDIT_LOG", str(tmp_path / "audit.log"))
    monkeypatch.delenv("MEDFUSE_LENS_USERS", raising=False)
    monkeypatch.delenv("MEDFUSE_LENS_DEV", raising=False)
    before = config.get_option("server.address")
    config.set_option("server.address", "127.0.0.1")
    SIGN_IN_THROTTLE.clear()  # one per server process: each test starts with no failed sign-ins
    yield tmp_path / "audit.log"
    config.set_option("server.address", before)
    SIGN_IN_THROTTLE.clear()


@pytest.fixture
def users_file(tmp_path: Path, monkeypatch) -> Path:
    path = tmp_path / "users.json"
    add_user(path, "alice", "clinician", PASSWORDS["alice"])
    add_user(path, "rob", "researcher", PASSWORDS["rob"])
    monkeypatch.setenv("MEDFUSE_LENS_USERS", str(path))
    monkeypatch.setenv("MEDFUSE_LENS_UNBOUND_SIGN_IN", "1")  # AppTest cannot serve app/server.py's binding
    return path


def _app() -> AppTest:
    return AppTest.from_file(MAIN, default_timeout=300)


def _entries(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _texts(elements) -> str:
    return " ".join(str(e.value) for e in elements)


def _shows_patient_data(at: AppTest) -> bool:
    return bool(at.dataframe) or "Demo data" in _texts(at.info) or any("Patient" in t.value for t in at.title)


def _sign_in(at: AppTest, name: str, password: str) -> AppTest:
    at.text_input(key="sign_in_name").input(name)
    at.text_input(key="sign_in_password").input(password)
    return at.button(key="sign_in_submit").click().run()


def test_dev_mode_shows_the_banner_and_the_dev_user() -> None:
    at = _app().run()
    assert not at.exception, [e.value for e in at.exception]
    assert DEV_BANNER in _texts(at.info)
    assert "User **dev** (researcher)" in _texts(at.sidebar.caption)
    assert at.dataframe  # the worklist, no sign-in needed
    at.switch_page("views/lab.py").run()  # dev is a researcher
    assert "Not permitted" not in _texts(at.error)
    assert DEV_BANNER in _texts(at.info)  # on every page


def test_dev_mode_refuses_a_public_address() -> None:
    config.set_option("server.address", "0.0.0.0")
    at = _app().run()
    assert not at.exception
    error = _texts(at.error)
    assert "127.0.0.1" in error and "'0.0.0.0'" in error and "MEDFUSE_LENS_USERS" in error
    assert not _shows_patient_data(at)


def test_sign_in_is_required_with_a_users_file(users_file: Path, _env: Path) -> None:
    at = _app().run()
    assert not at.exception
    assert at.text_input(key="sign_in_name") and at.text_input(key="sign_in_password").proto.type == 1  # password
    assert not _shows_patient_data(at) and DEV_BANNER not in _texts(at.info)

    for name, password in (("alice", PASSWORDS["rob"]), ("mallory", PASSWORDS["alice"])):
        _sign_in(at, name, password)
        assert _texts(at.error) == WRONG_LOGIN  # the same words for a wrong password and an unknown user
        assert not _shows_patient_data(at)
    assert [(e["action"], e["user"]) for e in _entries(_env)] == [("login_failed", "alice"),
                                                                  ("login_failed", "mallory")]


def test_repeated_wrong_passwords_make_the_name_wait(users_file: Path, _env: Path) -> None:
    """After the free failures even the right password is refused (not checked) until the wait is over."""
    at = _app().run()
    for _ in range(SIGN_IN_THROTTLE.free_failures):  # the README's "after 5 wrong passwords": the 5th starts the wait
        _sign_in(at, "rob", "not-robs-password")
        assert _texts(at.error) == WRONG_LOGIN
    _sign_in(at, "rob", PASSWORDS["rob"])
    message = _texts(at.error)
    waits = [TOO_MANY_TRIES.format(seconds=s) for s in range(1, int(SIGN_IN_THROTTLE.first_wait_s) + 1)]
    assert message in waits[-10:]  # the first wait, less the seconds the reruns took
    assert not _shows_patient_data(at)
    actions = [e["action"] for e in _entries(_env)]
    assert actions.count("login_failed") == SIGN_IN_THROTTLE.free_failures == 5 and actions[-1] == "login_throttled"
    _sign_in(at, "alice", PASSWORDS["alice"])  # another name is not held up
    assert not at.exception and _shows_patient_data(at)


def test_clinician_gets_no_lab_or_upload(users_file: Path, _env: Path) -> None:
    at = _sign_in(_app().run(), "alice", PASSWORDS["alice"])
    assert not at.exception and not at.error
    assert at.dataframe  # the worklist
    assert "Signed in as **alice** (clinician)" in _texts(at.sidebar.caption)
    assert at.sidebar.button(key="sign_out")
    for page in ("views/lab.py", "views/upload.py"):
        at.switch_page(page).run()
        assert "Not permitted" in _texts(at.error), page
        assert not at.get("file_uploader") and not at.tabs
    at.switch_page("views/model_card.py").run()
    assert "Not permitted" not in _texts(at.error)
    assert at.sidebar.text_input(key="checkpoint_dir").disabled  # no pointing the server at other folders
    at.sidebar.radio(key="source_choice").set_value("Bundle folder").run()
    assert at.sidebar.text_input(key="source_folder").disabled
    login = _entries(_env)[-1]
    assert (login["action"], login["user"], login["role"], login["detail"]) == ("login", "alice", "clinician",
                                                                                {"mode": "local"})


def test_researcher_gets_the_lab_and_can_sign_out(users_file: Path) -> None:
    at = _sign_in(_app().run(), "rob", PASSWORDS["rob"])
    at.switch_page("views/lab.py").run()
    assert not at.exception and "Not permitted" not in _texts(at.error)
    assert any(t.value == "Disentanglement lab" for t in at.title)
    at.switch_page("views/upload.py").run()
    assert at.get("file_uploader")
    assert not at.sidebar.text_input(key="checkpoint_dir").disabled
    at.sidebar.button(key="sign_out").click().run()
    assert at.text_input(key="sign_in_name") and not _shows_patient_data(at)


def test_a_user_removed_from_the_file_is_signed_out(users_file: Path) -> None:
    at = _sign_in(_app().run(), "alice", PASSWORDS["alice"])
    assert at.dataframe
    data = json.loads(users_file.read_text())
    del data["users"]["alice"]
    users_file.write_text(json.dumps(data))
    at.run()
    assert at.text_input(key="sign_in_name") and not _shows_patient_data(at)


def test_plain_main_refuses_local_sign_in_without_the_browser_binding(users_file: Path, monkeypatch) -> None:
    """`streamlit run app/main.py` with a users file: no binding cookie (that is app/server.py), so no sign-in form,
    a message naming the entry point to use, and no patient data."""
    monkeypatch.delenv("MEDFUSE_LENS_UNBOUND_SIGN_IN")
    at = _app().run()
    assert not at.exception
    error = _texts(at.error)
    assert "streamlit run app/server.py" in error and "MEDFUSE_LENS_USERS" in error
    assert not at.text_input and not _shows_patient_data(at)


def test_malformed_users_file_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "users.json"
    path.write_text('{"users": {"alice": {"role": "clinician", "password": "plain-text"}}}')
    monkeypatch.setenv("MEDFUSE_LENS_USERS", str(path))
    at = _app().run()
    assert not at.exception
    error = _texts(at.error)
    assert str(path) in error and "users.alice.password" in error
    assert not at.text_input and not _shows_patient_data(at)


def test_viewing_a_patient_is_audited_once_per_session(_env: Path) -> None:
    at = _app()
    at.query_params["patient"] = "P00004"
    at.switch_page("views/patient.py").run()
    assert not at.exception and at.title[0].value == "Patient P00004"
    at.run()  # a rerun (any widget) does not log again
    views = [e for e in _entries(_env) if e["action"] == "view_patient"]
    assert [(e["user"], e["role"], e["patient_id"]) for e in views] == [("dev", "researcher", "P00004")]
    at.selectbox(key="patient_picker").select("P00016").run()
    at.selectbox(key="patient_picker").select("P00004").run()
    views = [e for e in _entries(_env) if e["action"] == "view_patient"]
    assert [e["patient_id"] for e in views] == ["P00004", "P00016"]
    result = audit.verify(_env)
    assert result.ok and result.entries == len(_entries(_env))


def test_report_download_is_audited_when_the_file_is_made(_env: Path, monkeypatch) -> None:
    made: dict[str, object] = {}
    original = MediaFileManager.add_deferred

    def capture(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        made[file_name] = data_callable
        return original(self, data_callable, mimetype, coordinates, file_name, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", capture)
    at = _app()
    at.query_params["patient"] = "P00016"
    at.switch_page("views/patient.py").run()
    assert "P00016_report.html" in made
    assert not [e for e in _entries(_env) if e["action"] == "export_report"]  # showing the button is not an export
    out: list = []
    worker = threading.Thread(target=lambda: out.append(made["P00016_report.html"]()))  # Streamlit's own thread
    worker.start()
    worker.join()
    assert "P00016" in out[0]
    exports = [e for e in _entries(_env) if e["action"] == "export_report"]
    assert [(e["user"], e["patient_id"], e["detail"]["format"]) for e in exports] == [("dev", "P00016", "html")]
    assert audit.verify(_env).ok


def test_an_accepted_upload_is_audited_once(_env: Path) -> None:
    from medfuse_core.demo import demo_cohort_dir

    buffer = io.BytesIO()
    folder = demo_cohort_dir() / "P00016"
    with zipfile.ZipFile(buffer, "w") as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                z.write(path, str(path.relative_to(folder)))
    data = buffer.getvalue()
    at = _app().switch_page("views/upload.py").run()
    at.file_uploader(key="upload_zip").set_value(("p16.zip", data, "application/zip")).run()
    assert not at.exception and any(h.value == "Patient P00016" for h in at.header)
    at.run()
    uploads = [e for e in _entries(_env) if e["action"] == "upload_bundle"]
    assert [(e["user"], e["patient_id"], e["detail"]["file"], e["detail"]["sha256"]) for e in uploads] == [
        ("dev", "P00016", "p16.zip", hashlib.sha256(data).hexdigest())]


def test_an_unwritable_audit_log_hides_the_patient(tmp_path: Path, monkeypatch) -> None:
    log = tmp_path / "audit.log"
    log.write_text('{"seq": 1, "cut off')  # a damaged last line: nothing more is chained onto it
    at = _app()
    at.query_params["patient"] = "P00004"
    at.switch_page("views/patient.py").run()
    assert not at.exception
    assert "audit log could not be written" in _texts(at.error)
    assert not any("Patient P00004" in t.value for t in at.title)


def test_unreadable_secrets_stop_the_app(tmp_path: Path) -> None:
    """A typo in secrets.toml must not quietly turn sign-in off."""
    import streamlit as st

    bad = tmp_path / "secrets.toml"
    bad.write_text("[auth\nclient_id = 'x'\n")
    before = config.get_option("secrets.files")
    config.set_option("secrets.files", [str(bad)])
    st.secrets._reset()
    try:
        at = _app().run()
    finally:
        config.set_option("secrets.files", before)
        st.secrets._reset()
    assert not at.exception
    assert "secrets cannot be read" in _texts(at.error) and str(bad) in _texts(at.error)
    assert not _shows_patient_data(at) and DEV_BANNER not in _texts(at.info)


OIDC_SECRETS = {"auth": {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x",
                         "client_id": "x", "client_secret": "x",
                         "server_metadata_url": "https://idp.example.org/.well-known/openid-configuration"},
                "medfuse_lens": {"roles": {"rob@example.org": "researcher"}}}


def _oidc(user: dict, secrets: dict | None = None) -> AppTest:
    at = _app()
    at.secrets = secrets or OIDC_SECRETS
    at.user = user
    return at.run()


def test_oidc_signed_out_sees_no_data() -> None:
    at = _oidc({"is_logged_in": False})
    assert not at.exception
    assert not _shows_patient_data(at) and DEV_BANNER not in _texts(at.info)
    # a sign-in button, or (Authlib not installed) the reason there is none
    assert at.button(key="oidc_sign_in") if not at.error else "Authlib" in _texts(at.error)


def test_oidc_roles_come_from_the_secrets(_env: Path) -> None:
    at = _oidc({"is_logged_in": True, "email": "rob@example.org", "name": "Rob"})
    assert not at.exception and at.dataframe
    assert "Signed in as **rob@example.org** (researcher)" in _texts(at.sidebar.caption)
    at.switch_page("views/lab.py").run()
    assert "Not permitted" not in _texts(at.error)

    at = _oidc({"is_logged_in": True, "email": "ann@example.org"})
    assert "(clinician)" in _texts(at.sidebar.caption)
    at.switch_page("views/lab.py").run()
    assert "Not permitted" in _texts(at.error)
    logins = [(e["user"], e["role"], e["detail"]["mode"]) for e in _entries(_env) if e["action"] == "login"]
    assert logins == [("rob@example.org", "researcher", "oidc"), ("ann@example.org", "clinician", "oidc")]


def test_oidc_default_role_none_refuses_unknown_accounts() -> None:
    secrets = {**OIDC_SECRETS, "medfuse_lens": {"roles": {}, "default_role": "none"}}
    at = _oidc({"is_logged_in": True, "email": "eve@example.org"}, secrets)
    assert "Not permitted" in _texts(at.error) and not _shows_patient_data(at)
