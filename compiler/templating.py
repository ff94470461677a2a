"""jinja2 for the text formats that have no data model (haproxy.cfg, nginx.conf, Markdown).

Undefined names are errors (``StrictUndefined``).  Each format brings its own
escaping filters; every value from a spec passes through one of them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2

_HERE = Path(__file__).resolve().parent


def template_dirs() -> list[str]:
    """``templates/`` beside the package (a checkout) or inside it (an installed wheel)."""
    candidates = [_HERE / "templates", _HERE.parent / "templates"]
    return [str(p) for p in candidates if p.is_dir()]


# Characters that start Markdown or HTML markup anywhere in a line (or a table cell), each escaped.
_MD_ESCAPES = str.maketrans({c: "\\" + c for c in "\\`*_[]<>|#~&"})


def markdown(value: Any) -> str:
    """Plain text safe inside Markdown prose and table cells: no markup, no HTML, one line."""
    return " ".join(str(value).split()).translate(_MD_ESCAPES)


def markdown_code(value: Any) -> str:
    """Text as an inline code span that cannot be closed early; pipes escaped for tables."""
    text = " ".join(str(value).split())
    fence = "`"
    while fence in text:
        fence += "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}".replace("|", "\\|")


@cache
def _environment(filters: tuple[tuple[str, Callable[..., Any]], ...]) -> jinja2.Environment:
    import jinja2  # loaded with the first template: commands that render none never pay for it

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(template_dirs()),
        bytecode_cache=_bytecode_cache(),
        auto_reload=False,  # templates do not change while a command runs: no stat per render
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update({"md": markdown, "code": markdown_code})
    env.filters.update(dict(filters))
    return env


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    """Compiled templates in the cache folder (see :mod:`compiler.output.cache`), so that a command that renders
    one spec does not compile every template again; like the hash cache, an optimisation only."""
    import jinja2

    from compiler.output.cache import folder

    where = folder()
    if where is None:
        return None

    class Compiled(jinja2.FileSystemBytecodeCache):
        def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
            try:
                super().load_bytecode(bucket)
            except Exception:  # a damaged file: compile the template again
                bucket.reset()

        def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
            try:
                super().dump_bytecode(bucket)
            except OSError:  # a full or read-only cache folder
                pass

    try:
        (where / "templates").mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return Compiled(str(where / "templates"))


def render(name: str, filters: dict[str, Callable[..., Any]] | None = None, **context: Any) -> str:
    """Render ``templates/<name>`` with ``context``; ``filters`` add a format's escaping."""
    env = _environment(tuple(sorted((filters or {}).items())))
    return env.get_template(name).render(**context)
