"""What every token-reduction method is: declared knobs, a declared schedule, and a plan.

A method is configured with validated parameters for one tower (`VisionArch`). From them it
declares its token schedule (what its cost will be, before running anything) and builds the
engine plan that executes it. The engine then records the executed schedule, and tests check the
two agree. One parameter may be the method's *budget knob*: the budget solver moves it to meet a
GMACs target.

Methods never do I/O; what they need from outside (stored rankings, a trained predictor, learned
tokens) arrives through `Resources`.

Everything a pipeline needs to know about a method is declared here, on the class — which files it
needs (`requires`), whether it is an oracle, whether `--method all` runs it, the first block it
changes, the text classifier it scores with — so no pipeline ever asks for a method by name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from cliprank.cost.analytic import Schedule
from cliprank.engine.plan import Plan
from cliprank.methods.knobs import Param, check_known, judge
from cliprank.models.arch import VisionArch

if TYPE_CHECKING:
    import torch

    from cliprank.models.loading import LoadedModel


@dataclass
class Resources:
    """Everything a method may need beyond its parameters, gathered by the command that runs it."""

    rankings: Any = None  # cliprank.search.store.RankingIndex for `golden` and ranking agreement
    predictor: Any = None  # a loaded ranking predictor for `predictor`
    tokens: Any = None  # learned tokens for `+tokens`
    extra: dict[str, Any] = field(default_factory=dict)


class Method(ABC):
    name: ClassVar[str]
    summary: ClassVar[str]
    paper: ClassVar[str]  # citation of the method's paper
    reference: ClassVar[str] = ""  # the official code its parity test (tests/test_parity.py) follows, if any
    params: ClassVar[tuple[Param, ...]] = ()
    knob: ClassVar[str | None] = None  # the parameter the budget solver sets
    adaptive: ClassVar[bool] = False  # input-adaptive: the declared schedule is an upper bound
    produces_ranking: ClassVar[bool] = False  # records a per-patch ranking (judged against golden)
    label: ClassVar[str] = ""  # e.g. "oracle" for golden
    requires: ClassVar[tuple[str, ...]] = ()  # Resources fields it needs: "rankings", "predictor", "tokens"
    oracle: ClassVar[bool] = False  # decides with each image's search result: not deployable, not judged by it
    in_all: ClassVar[bool] = True  # one of the methods `--method all` runs (when what it requires exists)

    def __init__(self, arch: VisionArch, resources: Resources | None = None, **values: Any):
        self.arch = arch
        self.resources = resources or Resources()
        check_known(self.name, [param.name for param in self.params], values)
        self.values: dict[str, Any] = {
            param.name: judge(self.name, param, values.get(param.name, param.default), arch) for param in self.params
        }
        self.validate()

    def validate(self) -> None:  # noqa: B027  (a hook: most methods need no cross-parameter check)
        """Cross-parameter checks; raise CliprankError."""

    def __getattr__(self, item: str) -> Any:
        values = self.__dict__.get("values", {})
        if item in values:
            return values[item]
        raise AttributeError(item)

    @abstractmethod
    def schedule(self) -> Schedule:
        """Declared tokens per block (an upper bound for adaptive methods), with overhead MACs."""

    @abstractmethod
    def plan(self) -> Plan:
        """The engine plan that executes this setting."""

    @classmethod
    def knob_candidates(cls, arch: VisionArch, values: dict[str, Any]) -> Sequence[Any]:
        """Settings of the budget knob to try, any order; the solver keeps the costliest within budget."""
        return ()

    def describe(self) -> dict[str, Any]:
        return dict(self.values)

    def first_reduction_block(self) -> int | None:
        """The first block whose tokens this setting changes (None: it changes none).

        Read from the plan, so it cannot drift from what runs; learned tokens go in there by default.
        """
        for index, layer in enumerate(self.plan().layers):
            if layer.before or layer.after_attention:
                return index
        return None

    def text_classifier(self, model: LoadedModel, classnames: Sequence[str], default: torch.Tensor) -> torch.Tensor:
        """The zero-shot classifier this setting scores with: the shared one unless it learns text context."""
        return default

    def with_values(self, **changes: Any) -> Method:
        return type(self)(self.arch, self.resources, **{**self.values, **changes})


REGISTRY: dict[str, type[Method]] = {}  # the built-in methods; `cliprank.methods.registry` adds plug-ins


def register(cls: type[Method]) -> type[Method]:
    REGISTRY[cls.name] = cls
    return cls
