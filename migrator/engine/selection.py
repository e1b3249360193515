"""`--select` / `--ignore`: rule codes, code prefixes (`NM1`), rule names (`invalid-type`) or `ALL`."""
from __future__ import annotations

from dataclasses import dataclass


def _split(values: tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    out: list[str] = []
    for value in values or ():
        out.extend(v.strip() for v in value.split(",") if v.strip())
    return tuple(out)


@dataclass(frozen=True)
class Selection:
    select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()

    @classmethod
    def parse(cls, select=None, ignore=None) -> Selection:
        return cls(_split(select), _split(ignore))

    @staticmethod
    def _matches(selector: str, code: str, name: str) -> bool:
        return selector == "ALL" or selector == name or code.startswith(selector.upper())

    def enabled(self, code: str, name: str) -> bool:
        if self.select and not any(self._matches(s, code, name) for s in self.select):
            return False
        return not any(self._matches(s, code, name) for s in self.ignore)

    def unknown_selectors(self, rules: list[tuple[str, str]]) -> list[str]:
        """Selectors that match no rule (a typo in --select should not silently select nothing)."""
        return [s for s in self.select + self.ignore if not any(self._matches(s, c, n) for c, n in rules)]
