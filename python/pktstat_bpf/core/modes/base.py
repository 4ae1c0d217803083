"""The part of the mode protocol every engine object answers the same way."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


class EngineMode:
    """The part of the mode protocol every engine object answers the same
    way (attach, detach, attached, attach_path): modes inherit it and
    override what they do differently."""

    engine: Any = None

    def attach(self) -> None:
        self.engine.attach()

    @property
    def attached(self) -> bool:
        return self.engine is not None and self.engine.attached

    def detach(self) -> None:
        if self.engine is not None:
            self.engine.detach()

    @property
    def attach_path(self) -> str:
        return self.engine.attach_path if self.engine is not None else ""

    def unowned(self, records: np.ndarray) -> tuple[int, int] | None:
        """(packets, bytes) without an owner: None where nothing is owned."""
        return None
