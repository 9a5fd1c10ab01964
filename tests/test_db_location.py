"""A request log's location: a SQLite path or a PostgreSQL URL, and the URL as it may be
shown (never its password). Pure."""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from arbstr.storage.location import display, is_postgres, password, scrub


def test_paths_and_urls_are_told_apart() -> None:
    assert is_postgres("postgresql://u:p@h/db") and is_postgres("POSTGRES://h/db")
    assert not is_postgres("./arbstr.db") and not is_postgres("/var/lib/postgresql.db")
    assert display("./arbstr.db") == "./arbstr.db"


def test_the_password_is_hidden_wherever_the_url_holds_it() -> None:
    assert (
        display("postgresql://arbstr:s3cret@db:5432/log") == "postgresql://arbstr:***@db:5432/log"
    )
    assert display("postgresql://arbstr@db/log") == "postgresql://arbstr@db/log"
    assert display("postgresql://db/log?sslmode=require&password=s3cret") == (
        "postgresql://db/log?sslmode=require&password=***"
    )
    assert password("postgresql://u:p%40ss@h/db") == "p@ss"


def test_an_unparsable_url_shows_only_its_scheme() -> None:
    assert display("postgresql://u:pw@[bad/db") == "postgresql://***"


def test_scrub_removes_the_password_raw_and_encoded() -> None:
    url = "postgresql://u:p%40ss word@h/db"
    text = f"failed for p@ss word and {quote('p@ss word', safe='')} at {url}"
    out = scrub(text, url)
    assert "p@ss" not in out and "p%40ss" not in out
    assert "postgresql://u:***@h/db" in out


_secret = st.text(
    st.characters(min_codepoint=33, max_codepoint=0x2FF, exclude_characters="@/?#[]"),
    min_size=6,
    max_size=20,
)


@given(_secret, st.sampled_from(["db", "127.0.0.1", "db.example:5432"]))
def test_no_form_of_the_url_shows_its_password(secret: str, host: str) -> None:
    url = f"postgresql://arbstr:{quote(secret, safe='')}@{host}/log"
    assert password(url) == secret
    shown = display(url)
    assert secret not in shown and quote(secret, safe="") not in shown
    message = scrub(f"error: {secret} {url} {quote(secret, safe='')}", url)
    assert secret not in message and quote(secret, safe="") not in message
