"""Every target's `TargetSignals` by name, plus the conversation affinity map.

Built from a `Config`; `rebuilt(new_config)` makes the registry for a reloaded
config and carries over the live signals of every target that still exists with
the same identity (kind, base_url, model), so a reload does not forget TTFTs,
in-flight counts or an open breaker. A target whose identity changed is a new
backend and starts fresh; conversations pinned to removed targets are forgotten.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping

from router.clock import Clock
from router.config import Config, TargetConfig
from router.policy.base import TargetView
from router.signals.affinity import AffinityMap
from router.signals.target import TargetSignals


def _identity(config: TargetConfig) -> tuple[str, str | None, str]:
    return config.kind, config.base_url, config.model


class SignalsRegistry(Mapping[str, TargetSignals]):
    """name -> TargetSignals for one config generation."""

    def __init__(
        self,
        config: Config,
        clock: Clock,
        *,
        wall_clock: Clock = time.time,
        affinity: AffinityMap | None = None,
        previous: Mapping[str, TargetSignals] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._wall_clock = wall_clock
        self.affinity = affinity if affinity is not None else AffinityMap(clock)
        old = previous or {}
        targets: dict[str, TargetSignals] = {}
        for target in config.targets:
            kept = old.get(target.name)
            if kept is not None and _identity(kept.config) == _identity(target):
                kept.reconfigure(target, config.signals)
                targets[target.name] = kept
            else:
                targets[target.name] = TargetSignals(
                    target, config.signals, clock, wall_clock=wall_clock
                )
        self._targets = targets
        #: names of targets that are new in this generation / started afresh
        self.fresh: tuple[str, ...] = tuple(n for n, s in targets.items() if old.get(n) is not s)
        #: names of targets of the previous generation that are gone
        self.removed: tuple[str, ...] = tuple(n for n in old if n not in targets)
        self.affinity.forget_targets(n for n in old if n not in targets or targets[n] is not old[n])

    def rebuilt(self, config: Config) -> SignalsRegistry:
        """The registry for a reloaded config, keeping the signals of surviving targets."""
        return SignalsRegistry(
            config,
            self._clock,
            wall_clock=self._wall_clock,
            affinity=self.affinity,
            previous=self._targets,
        )

    def __getitem__(self, name: str) -> TargetSignals:
        return self._targets[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._targets)

    def __len__(self) -> int:
        return len(self._targets)

    def views(self, names: Iterable[str] | None = None) -> tuple[TargetView, ...]:
        """Snapshots of the named targets (all of them by default), in that order."""
        chosen = self._targets if names is None else names
        return tuple(self._targets[n].view() for n in chosen)
