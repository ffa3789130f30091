"""The database of the Prefect server `stethoscope serve` starts: SQLite in PREFECT_HOME by
default, or a team's PostgreSQL given as Prefect's own setting, a SQLAlchemy URL
(`postgresql+asyncpg://user:password@host:5432/prefect`).

The URL goes into the server's environment only (PREFECT_SERVER_DATABASE_CONNECTION_URL), never
into the worker's or a flow run's, and it is printed only with its password masked.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote, unquote, urlsplit

from stethoscope.schemas.errors import UsageError

URL_ENV = "PREFECT_SERVER_DATABASE_CONNECTION_URL"
# Prefect reads the URL (and the separate host, user, password ... settings) under either prefix.
_PREFIXES = ("PREFECT_SERVER_DATABASE_", "PREFECT_API_DATABASE_")
_SCHEMES = ("postgresql+asyncpg", "sqlite+aiosqlite")  # Prefect's server needs an async driver
MASK = "***"


def check_url(url: str) -> str:
    """The URL, if Prefect's server can use it; else a UsageError that says what to write."""
    scheme = urlsplit(url).scheme
    if scheme in ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg"):
        raise UsageError(f"--database-url {mask(url)}: Prefect's server needs the asyncpg driver: "
                         "write postgresql+asyncpg://user:password@host:5432/database")
    if scheme not in _SCHEMES:
        raise UsageError(f"--database-url {mask(url)}: expected postgresql+asyncpg://... "
                         f"(or sqlite+aiosqlite:///path), got scheme '{scheme}'")
    if scheme.startswith("postgresql") and not urlsplit(url).hostname:
        raise UsageError(f"--database-url {mask(url)}: no host; write "
                         "postgresql+asyncpg://user:password@host:5432/database")
    return url


def configured_url(env: Mapping[str, str]) -> str | None:
    """The connection URL the server will use from `env` (either of Prefect's two names)."""
    return env.get(URL_ENV) or env.get("PREFECT_API_DATABASE_CONNECTION_URL") or None


def database_settings(env: Mapping[str, str]) -> dict[str, str]:
    """Prefect's database settings in `env` (the URL, or host, user, password ...)."""
    return {key: value for key, value in env.items() if key.startswith(_PREFIXES)}


def without_database_settings(env: Mapping[str, str]) -> dict[str, str]:
    """`env` minus Prefect's database settings: what the worker and the CLI calls get (they
    talk to the API, never to the database)."""
    return {key: value for key, value in env.items() if not key.startswith(_PREFIXES)}


def mask(url: str) -> str:
    """The URL with its password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{user}:{MASK}@{host}").geturl()


def redact(text: str, url: str | None) -> str:
    """`text` (a log tail, an error message) with the URL's password masked wherever it
    appears, as given or percent-encoded."""
    password = urlsplit(url).password if url else None
    if not password:
        return text
    for form in {password, unquote(password), quote(password, safe=""), quote(unquote(password), safe="")}:
        if form:
            text = text.replace(form, MASK)
    return text


def describe(url: str | None, home: str) -> str:
    """One line for the console: which database the server keeps its state in."""
    if url is None:
        return f"SQLite, {home}/prefect.db"
    return mask(url)
