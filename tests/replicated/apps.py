"""State machines the replicated tests run (importable by `confer serve --app` as
``tests.replicated.apps:Name``)."""

from __future__ import annotations

from confer.replicated import StateMachine, command, field, query


class Register(StateMachine):
    """A few commands that exercise results, errors, replicated time and randomness."""

    values: dict[str, int] = field(dict)
    log: list[str] = field(list)

    @command
    def set(self, key: str, value: int) -> int | None:
        old = self.values.get(key)
        self.values[key] = value
        return old

    @command
    def add(self, key: str, delta: int = 1) -> int:
        if key not in self.values:
            self.log.append(f"missing {key}")  # a change the failing command leaves
            raise KeyError(f"no key {key!r}")
        self.values[key] += delta
        return self.values[key]

    @command
    def stamp(self) -> list[float]:
        return [self.now, self.random.random(), self.index]

    @query
    def get(self, key: str) -> int | None:
        return self.values.get(key)

    @query(serializable=True)
    def size(self) -> int:
        return len(self.values)


class RegisterV2(Register):
    """Register's next version (an upgrade): its entries stop a member running Register."""

    version = 2


RegisterV2.__name__ = "Register"  # the same app, newer code


class RegisterV2Pinned(RegisterV2):
    """The first step of a rolling upgrade: version 2's code, writing version 1 entries."""

    write_version = 1


RegisterV2Pinned.__name__ = "Register"
