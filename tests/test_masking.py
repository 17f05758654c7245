"""Secrets never reach a person or a file (DESIGN section 7): masking, with no server.

Each DSN spelling a user may write (URL, key=value, quoted key=value, ?password=),
then the two places that must mask on their own: the errors a user reads and the
state store's event log.
"""

from __future__ import annotations

import pytest

from migrator.errors import (
    MigratorError,
    OperationFailed,
    PlaybookError,
    ServerUnreachable,
)
from migrator.masking import MASK, mask_secrets
from migrator.move.state import StateStore

SECRET = "s3cr3t-Pw"


@pytest.mark.parametrize(("text", "masked"), [
    # URL form: user:password@host
    (f"postgresql://app:{SECRET}@db.example:5432/app",
     f"postgresql://app:{MASK}@db.example:5432/app"),
    (f"postgres://app:{SECRET}@h/app?sslmode=require",
     f"postgres://app:{MASK}@h/app?sslmode=require"),
    # a password with URL-escaped characters and a colon in it
    ("postgresql://app:p%40ss:w0rd@h/app", f"postgresql://app:{MASK}@h/app"),
    # key=value form, unquoted, quoted (libpq's single quotes, with a space and an escape)
    (f"host=h port=5432 password={SECRET} dbname=app", f"host=h port=5432 password={MASK} dbname=app"),
    ("host=h password='p w' dbname=app", f"host=h password={MASK} dbname=app"),
    ("host=h password='it\\'s' dbname=app", f"host=h password={MASK} dbname=app"),
    # spaces around '=' and upper case are what libpq accepts too
    (f"host=h PASSWORD = {SECRET} user=u", f"host=h PASSWORD = {MASK} user=u"),
    # ?password= and &password= in a URL
    (f"postgresql://app@h/app?sslmode=require&password={SECRET}",
     f"postgresql://app@h/app?sslmode=require&password={MASK}"),
    # inside a sentence, two DSNs at once
    (f"cannot connect to postgresql://a:{SECRET}@h/db nor to host=h password={SECRET}",
     f"cannot connect to postgresql://a:{MASK}@h/db nor to host=h password={MASK}"),
])
def test_every_password_spelling_is_masked(text, masked):
    assert mask_secrets(text) == masked
    assert SECRET not in mask_secrets(text)


@pytest.mark.parametrize("text", [
    "postgresql://app@h:5432/app",          # no password: nothing to hide
    "host=h port=5432 user=app dbname=app",
    "the pause took 220 ms",
    "",
])
def test_text_without_a_password_is_left_alone(text):
    assert mask_secrets(text) == text


def test_a_query_password_masks_only_itself():
    assert mask_secrets(f"postgresql://h/app?password={SECRET}&sslmode=require") == \
        f"postgresql://h/app?password={MASK}&sslmode=require"


def test_a_double_quoted_value_is_masked():
    assert SECRET not in mask_secrets(f'host=h password="{SECRET}" dbname=app')


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("error_class", [MigratorError, OperationFailed, ServerUnreachable])
def test_errors_mask_their_message_and_hint(error_class):
    error = error_class(f"cannot connect to postgresql://app:{SECRET}@h/app",
                        hint=f"check the DSN host=h password={SECRET}")
    assert SECRET not in str(error)
    assert SECRET not in error.message and SECRET not in error.hint
    assert str(error) == (f"cannot connect to postgresql://app:{MASK}@h/app"
                          f" — check the DSN host=h password={MASK}")
    assert SECRET not in repr(error.args)


def test_a_playbook_error_masks_every_problem_in_its_message():
    error = PlaybookError([f"source.dsn: postgresql://app:{SECRET}@h/app is unreachable",
                           f"target.dsn: host=h password='{SECRET} x' is unreachable"], source="p.yaml")
    assert SECRET not in str(error)
    assert str(error).startswith("invalid playbook p.yaml: 2 problems:\n  - source.dsn: ")
    assert f"password={MASK} is unreachable" in str(error)


# --------------------------------------------------------------------------- the state store


def test_the_event_log_and_step_errors_keep_no_password(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        store.ensure_move("m")
        store.log("m", "sql", f"connected to postgresql://app:{SECRET}@h/app", step="schema",
                  sql=f"CREATE SUBSCRIPTION s CONNECTION 'host=h password={SECRET}' PUBLICATION p")
        store.update_data("m", "cutover", event=f"watchdog: host=h password='{SECRET} 2'", phase="pausing")
        from migrator.move.statuses import StepStatus

        store.set_step("m", "replicate", StepStatus.FAILED, error=f"lost postgresql://u:{SECRET}@h/db")
        events = store.events("m")
        error = store.step("m", "replicate").error
    finally:
        store.close()
    texts = [e.message for e in events] + [e.sql for e in events if e.sql] + [error]
    assert len(events) == 2
    assert not [t for t in texts if SECRET in t], texts
    assert events[0].sql == f"CREATE SUBSCRIPTION s CONNECTION 'host=h password={MASK}' PUBLICATION p"
    assert error == f"lost postgresql://u:{MASK}@h/db"


def test_the_store_shows_its_own_url_masked(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    store.close()
    # An unreachable Postgres URL: the error names the store without its password.
    with pytest.raises(OperationFailed) as caught:
        StateStore(f"postgresql+psycopg://u:{SECRET}@127.0.0.1:1/state?connect_timeout=1")
    assert SECRET not in str(caught.value)
    assert f"u:{MASK}@127.0.0.1:1" in str(caught.value)


def test_a_dsn_listing_several_hosts_is_masked_whole():
    text = f"postgresql://app:{SECRET}@db-1:5432,db-2:5433/app?target_session_attrs=read-write"
    assert mask_secrets(text) == f"postgresql://app:{MASK}@db-1:5432,db-2:5433/app?target_session_attrs=read-write"
    assert mask_secrets(f"host=db-1,db-2 port=5432,5433 password={SECRET}") == \
        f"host=db-1,db-2 port=5432,5433 password={MASK}"


def test_a_long_text_is_masked_line_by_line_as_a_short_one_is():
    # plan --json of a thousand tables is megabytes: masked where a line can hold a secret
    filler = ("x" * 100 + "\n") * 1000
    text = filler + "postgresql://u:Secret1@h/db\n" + "host=a password=Secret2 dbname=b\n" + filler
    masked = mask_secrets(text)
    assert "Secret1" not in masked and "Secret2" not in masked and masked.count("****") == 2
    assert masked.replace("****", "") == text.replace("Secret1", "").replace("Secret2", "")
    # a value on the line after its keyword falls back to the whole text
    assert mask_secrets(filler + "password =\n Secret3").endswith("password =\n ****")
