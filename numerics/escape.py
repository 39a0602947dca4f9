"""Why trained tied models leave the unigram plateau: the M_π curvature along a training run.

Claims ``MANIFOLD`` and ``TRAIN-TYING``.  The tied one-layer model at p + q > 1 has θ_π as a local
minimum, yet some training runs leave the plateau at H(π).  At every evaluation of a run this module
projects θ(t) onto the critical manifold M_π (e → 0, b → log(p/q), every other weight kept; see
``numerics.manifold.project_to_manifold``) and classifies the projection by the Schur complement

    S = k [Cov_n(z_n) - (A + Aᵀ)],    A = (1/N) Σ_n Σ_{i≤n} λ^{n+1-i} K_{n,i},    k = π0 π1,  λ = 1 - p - q,

with z_n the hidden states and K_{n,i} = ∂z_n/∂x̃_i at x̃ = pos (``manifold_curvature``): the projection
is a local minimum iff S ≻ 0 and a saddle iff S has a negative eigenvalue.  A run whose projection
has become a saddle can leave the plateau along the escape direction (mostly e); one whose
projection stays a local minimum cannot, to second order, as long as θ(t) stays near M_π.

What makes S negative.  Split A by the attended position:

    A = A_att + A_diag,   A_att = mean_n Σ_{i<n} λ^{n+1-i} K_{n,i}  (attention to earlier symbols),
                          A_diag = λ mean_n K_{n,n}                (the symbol's own path),

and K_{n,n} = G_n (I + W_O J_n) with G_n = I + W_2 diag(1[W_1 y_n > 0]) W_1 (residual + feed-forward)
and J_n = ∂m_n/∂x̃_n the attention output's dependence on its own position (``diagonal_jacobian``).
Along the unit bottom eigenvector w of S, λ_min(S) = wᵀ S w is the sum of

    covariance      k wᵀ Cov_n(z_n) w                  ≥ 0
    baseline        -2kλ                               = 2k(p+q-1) > 0 for p + q > 1 (θ_π's value)
    attention       -2k wᵀ A_att w                     (i < n)
    self_attention  -2kλ wᵀ mean_n G_n W_O J_n w       (i = n, through attention)
    feed_forward    -2kλ wᵀ mean_n (G_n - I) w         (i = n, through the feed-forward)

(``CurvatureParts``); the diagonal block is self_attention + feed_forward, i.e. K_{n,n} beyond θ_π's
K_{n,n} = I.  The block with the more negative contribution "drives" the smallest eigenvalue.

Why the projection can drift into the saddle region (a hypothesis the records test).  Near M_π, with b
at its best value, the population loss is L ≈ H(π) + ½ eᵀ S(W) e (W: every weight but e and b; the
Schur complement is what is left of the (e, b) block after minimising over b), so its gradient in W is
≈ ½ eᵀ (∂S/∂W) e: descent lowers the curvature along the current e.  Under gradient descent that speed
is ∝ |e|² and vanishes as e → 0; Adam divides each coordinate's step by its own gradient scale, so its
steps do not shrink with |e| (nor does the O(|e|) sampling noise of the W-gradient, normalised alike).
Each point therefore also records the alignment |cos(e, w)| of e with S's bottom eigenvector w and how
far pos, the attention weights (W_Q, W_K, W_V, W_O) and the feed-forward weights (W_1, W_2) have moved
since the first evaluation (Frobenius norms).

Bookkeeping of a run (``escape_outcome``), with U the unigram predictor's loss on the run's own test
sequences (≈ H(π); paired with the model's test loss, so sampling noise cancels) and a band β > 0:

* escape step: the first evaluation with test loss < U - β ("clearly below H(π)"); None if none.
* first plateau point: the first evaluation before the escape step with |test loss - U| ≤ β.
* plateau: among the evaluations before the escape step (all, if none), the one whose test loss is
  closest to U, provided it is within β (else None: the run never sat on the plateau).
* last plateau point: the last evaluation before the escape step with |test loss - U| ≤ β (the run's
  final evaluation if it never escapes and ends on the plateau).
* crossing step: the first evaluation whose projection is classified a saddle point (λ_min(S) below
  minus its rounding-error bound); None if none.
* prediction at a point: "escapes" if its projection is a saddle, "trapped" if a local minimum,
  "undecided" otherwise; observed outcome: "escaped" iff an escape step exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.func import jvp, vmap

from numerics import transformer as model
from numerics.autocovariance import autocovariance
from numerics.manifold import (
    LOCAL_MINIMUM,
    SADDLE_POINT,
    ManifoldCurvature,
    binary_source,
    centred_spread,
    layer_states,
    manifold_curvature,
    position_pass,
    project_to_manifold,
    tangent_chunk,
)
from numerics.markov import InvalidInputError, MarkovChain
from numerics.train import Source, TrainConfig, TrainResult, train
from numerics.transformer import Params, has_layer_norm, num_layers

ESCAPES, TRAPPED, UNDECIDED = "escapes", "trapped", "undecided"
ATTENTION, DIAGONAL = "attention", "diagonal"
#: Weight groups whose distance moved along M_π is recorded.
GROUPS = {"pos": ("pos",), "attention": ("W_Q", "W_K", "W_V", "W_O"), "feed_forward": ("W_1", "W_2")}


@dataclass(frozen=True)
class SelfJacobian:
    """K_{n,n} = ∂z_n/∂x̃_n (every other x̃_i held) and its feed-forward factor G_n, each (N, d, d)."""

    total: Tensor
    feed_forward: Tensor


def diagonal_jacobian(params: Params, dtype: torch.dtype = torch.float64, memory: int | None = None) -> SelfJacobian:
    """K_{n,n} = G_n (I + W_O J_n) of the one-layer model at x̃ = pos, for every position n.

    J_n = ∂m_n/∂x̃_n for the attention mix m_n = Σ_{l≤n} a_{n,l} v_l, v_l = W_V x̃_l, where x̃_n enters
    as the query of every score s_{n,l} = <W_Q x̃_n, W_K x̃_l>/√d and as the key and value of l = n:

        J_n = a_{n,n} W_V + a_{n,n} (v_n - m_n) r_nᵀ + Σ_l a_{n,l} (v_l - m_n) u_lᵀ,
        r_n = W_Kᵀ W_Q x̃_n / √d,   u_l = W_Qᵀ W_K x̃_l / √d,

    and G_n = I + W_2 diag(1[W_1 y_n > 0]) W_1 is the Jacobian of z_n = y_n + W_2 ReLU(W_1 y_n) in y_n.
    Cost O(N² d + N d² r); tests check it against ``torch.func.jacrev`` of the forward pass.
    """
    fp = position_pass(params, dtype, memory)
    W, v, m, y = fp.W, fp.v, fp.m, fp.y
    own = fp.att.diagonal()
    J = own[:, None, None] * (W["W_V"] + (v - m)[:, :, None] * fp.r[:, None, :]) + centred_spread(fp.att, v, fp.u, m)
    eye = torch.eye(fp.x.shape[1], dtype=dtype, device=fp.x.device)
    active = (y @ W["W_1"].T > 0).to(dtype)
    G = eye + W["W_2"] @ (active[:, :, None] * W["W_1"])
    return SelfJacobian(total=G @ (eye + W["W_O"] @ J), feed_forward=G)


@dataclass(frozen=True)
class CurvatureParts:
    """λ_min(S) = wᵀ S w split into the contributions of the module docstring (w: unit bottom eigenvector).

    ``vector`` is w with its largest entry positive; the five parts sum to ``eigenvalue``.
    """

    eigenvalue: float
    vector: Tensor
    covariance: float
    baseline: float
    attention: float
    self_attention: float
    feed_forward: float

    @property
    def diagonal(self) -> float:
        """The i = n block beyond θ_π: self_attention + feed_forward."""
        return self.self_attention + self.feed_forward

    @property
    def driver(self) -> str:
        """"attention" or "diagonal": the block with the more negative contribution."""
        return ATTENTION if self.attention < self.diagonal else DIAGONAL

    @property
    def leading(self) -> str:
        """The most negative of attention, self_attention and feed_forward."""
        return min(("attention", "self_attention", "feed_forward"), key=lambda name: getattr(self, name))

    def as_dict(self) -> dict[str, float | str]:
        names = ("eigenvalue", "covariance", "baseline", "attention", "self_attention", "feed_forward")
        return {name: getattr(self, name) for name in names} | {
            "diagonal": self.diagonal, "driver": self.driver, "leading": self.leading}


def curvature_parts(point: Params, curvature: ManifoldCurvature, memory: int | None = None) -> CurvatureParts:
    """Split λ_min(S) of the M_π point ``point`` (tied, as classified by ``curvature``) into its parts.

    Cov_n(z_n) is ``curvature.covariance``, A_diag from ``diagonal_jacobian``,
    A_att = A - A_diag; the sum of the parts equals the smallest eigenvalue of ``curvature.schur`` up
    to rounding (tests check it, and A_att against the brute-force Jacobians).
    """
    if not curvature.tying:
        raise InvalidInputError("the curvature split is derived for the tied model")
    eigenvalues, vectors = torch.linalg.eigh(curvature.schur)
    w = vectors[:, 0]
    w = w * torch.sign(w[w.abs().argmax()])
    k, lam = curvature.k, curvature.lam
    selfjac = diagonal_jacobian(point, curvature.schur.dtype, memory)
    eye = torch.eye(w.shape[0], dtype=w.dtype, device=w.device)
    attention = curvature.lag_jacobian - lam * selfjac.total.mean(dim=0)

    def quad(matrix: Tensor) -> float:
        return (w @ matrix @ w).item()

    return CurvatureParts(
        eigenvalue=eigenvalues[0].item(),
        vector=w,
        covariance=k * quad(curvature.covariance),
        baseline=-2 * k * lam * quad(eye),
        attention=-2 * k * quad(attention),
        self_attention=-2 * k * lam * quad((selfjac.total - selfjac.feed_forward).mean(dim=0)),
        feed_forward=-2 * k * lam * quad(selfjac.feed_forward.mean(dim=0) - eye),
    )


def bottom_vector(curvature: ManifoldCurvature) -> Tensor:
    """The unit bottom eigenvector w of S, its largest entry positive."""
    w = torch.linalg.eigh(curvature.schur)[1][:, 0]
    return w * torch.sign(w[w.abs().argmax()])


def lag_profile(point: Params, curvature: ManifoldCurvature, source: Source, memory: int | None = None,
                lags: int = 8) -> dict[str, float | list[float]]:
    """λ_min(S) = wᵀ S w split by the attended lag, for any depth, mask and layer norm (``MANIFOLD-GENERAL``).

    With q_{n,i} = wᵀ K_{n,i} w (w: S's bottom eigenvector; one forward-mode pass per input position i),

        wᵀ S w = k wᵀ Cov_n(z_n) w  +  Σ_m part(m),     part(m) = -2 c(m) (1/N) Σ_n q_{n, n+1-m},

    m = n + 1 - i the lag of x̃_i in c(m) = Cov(x_{t+m}, x_t): m = 1 is the symbol's own position, m = 2 the one
    before (the only one the second-order source's x_{n+1} depends on).  Returns the covariance part, part(1..lags)
    and the sum of the parts beyond ``lags``; they add up to λ_min(S) up to rounding (tests check it).
    """
    w = bottom_vector(curvature)
    weights = {name: value.detach().to(w.dtype) for name, value in point.items()}
    pos = weights["pos"]
    seq_len = pos.shape[0]
    tangents = torch.eye(seq_len, dtype=w.dtype)[:, :, None] * w[None, None, :]  # row i: w at position i
    forward = vmap(lambda t: jvp(lambda h: model.hidden(weights, h, memory), (pos,), (t,))[1])
    chunk = tangent_chunk(weights, seq_len, num_layers(weights), pos.device)
    q = torch.cat([forward(t) for t in tangents.split(chunk)]) @ w  # q[i, n] = wᵀ K_{n,i} w
    c = torch.as_tensor(autocovariance(source).scalar(seq_len) if not isinstance(source, MarkovChain)
                        else curvature.k * curvature.lam ** torch.arange(1, seq_len + 1, dtype=torch.float64),
                        dtype=w.dtype)
    parts = [-2 * c[m - 1].item() * q.diagonal(offset=m - 1).sum().item() / seq_len for m in range(1, seq_len + 1)]
    return {"covariance": curvature.k * (w @ curvature.covariance @ w).item(), "lags": parts[:lags],
            "beyond": sum(parts[lags:]), "eigenvalue": curvature.schur_eigenvalues[0].item()}


def attention_to_previous(point: Params, memory: int | None = None) -> list[float]:
    """Per layer, mean_{n≥2} a_{n,n-1}: the attention mass on the previous symbol x_{n-1} at x̃ = pos (lag m = 2)."""
    return [state.attention.diagonal(offset=-1).mean().item() for state in layer_states(point, memory)]


@dataclass(frozen=True)
class EscapePoint:
    """One evaluation of a tied run: the test loss and the curvature of θ(t)'s projection onto M_π.

    ``lambda_min`` = λ_min(S) (``schur_eigenvalues[0]``), ``e_norm`` = |e(t)| before projection,
    ``alignment`` = |cos(e(t), w)| with w the bottom eigenvector of S (NaN if e = 0), ``drift``: the
    Frobenius distance of each of ``GROUPS`` from its value at ``start`` (empty without a start);
    ``parts``: ``curvature_parts`` (one layer without layer norm; None otherwise); ``attention_previous``:
    ``attention_to_previous`` of the projection.
    """

    step: int
    test_loss: float
    lambda_min: float
    classification: str
    error_bound: float
    e_norm: float
    parts: CurvatureParts | None
    alignment: float = math.nan
    drift: dict[str, float] = field(default_factory=dict)
    attention_previous: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"step": self.step, "test_loss": self.test_loss, "lambda_min": self.lambda_min,
                "classification": self.classification, "error_bound": self.error_bound,
                "e_norm": self.e_norm, "alignment": self.alignment, "drift": self.drift,
                "parts": self.parts.as_dict() if self.parts else None,
                "attention_previous": self.attention_previous}


def drift(params: Params, start: Params) -> dict[str, float]:
    """‖θ_g - θ_g(start)‖ (Frobenius, over the group's tensors together) for every group g of ``GROUPS``."""
    return {group: math.sqrt(sum(float((params[name].detach() - start[name]).pow(2).sum())
                                 for name in params if name.split(".")[0] in names))
            for group, names in GROUPS.items()}


def measure_point(
    params: Params, source: Source, step: int, test_loss: float, *, memory: int | None = None,
    start: Params | None = None,
) -> EscapePoint:
    """Project tied ``params`` (any depth, layer norm) onto M_π of the binary ``source`` and classify the projection
    at the run's own N and attention memory.  ``start``: parameters to measure the drift from, or None."""
    point = project_to_manifold(params, tying=True, source=source)
    curvature = manifold_curvature(point, tying=True, source=source, memory=memory)
    one_layer = num_layers(point) == 1 and not has_layer_norm(point)
    parts = curvature_parts(point, curvature, memory) if one_layer else None
    w = bottom_vector(curvature)
    e = params["e"].detach().to(w.dtype)
    e_norm = torch.linalg.vector_norm(e).item()
    alignment = abs((e @ w).item()) / e_norm if e_norm > 0 else math.nan
    return EscapePoint(
        step=step, test_loss=test_loss, lambda_min=curvature.schur_eigenvalues[0].item(),
        classification=curvature.classification, error_bound=curvature.error_bound, e_norm=e_norm,
        parts=parts, alignment=alignment, drift=drift(params, start) if start is not None else {},
        attention_previous=attention_to_previous(point, memory),
    )


@dataclass
class EscapeRecorder:
    """An ``on_eval`` hook for ``numerics.train.train``: measures every evaluation, keeps a copy of θ(t)."""

    source: Source
    memory: int | None = None
    points: list[EscapePoint] = field(default_factory=list)
    snapshots: list[Params] = field(default_factory=list, repr=False)

    def __call__(self, step: int, params: Params, test_loss: float) -> None:
        start = self.snapshots[0] if self.snapshots else params
        self.points.append(measure_point(params, self.source, step, test_loss, memory=self.memory, start=start))
        self.snapshots.append({name: value.detach().clone() for name, value in params.items()})


def prediction(point: EscapePoint | None) -> str | None:
    """"escapes" (saddle), "trapped" (local minimum), "undecided"; None without a point."""
    if point is None:
        return None
    return {SADDLE_POINT: ESCAPES, LOCAL_MINIMUM: TRAPPED}.get(point.classification, UNDECIDED)


@dataclass(frozen=True)
class EscapeOutcome:
    """Indices into a run's evaluations (None where the event did not happen); see the module docstring."""

    escape: int | None
    first_plateau: int | None
    plateau: int | None
    last_plateau: int | None
    crossing: int | None


def escape_outcome(points: list[EscapePoint], unigram: float, band: float) -> EscapeOutcome:
    """Escape step, plateau, last plateau point and crossing of a run (definitions: module docstring).

    ``unigram``: the unigram predictor's loss on the run's test sequences; ``band``: β > 0 (nats).
    """
    if not band > 0:
        raise InvalidInputError(f"band must be positive, got {band!r}")
    escape = next((i for i, pt in enumerate(points) if pt.test_loss < unigram - band), None)
    before = range(escape if escape is not None else len(points))
    near = [i for i in before if abs(points[i].test_loss - unigram) <= band]
    plateau = min(near, key=lambda i: abs(points[i].test_loss - unigram)) if near else None
    crossing = next((i for i, pt in enumerate(points) if pt.classification == SADDLE_POINT), None)
    return EscapeOutcome(escape=escape, first_plateau=near[0] if near else None, plateau=plateau,
                         last_plateau=near[-1] if near else None, crossing=crossing)


@dataclass
class EscapeRun:
    """One tracked run: its training result, every evaluation's curvature, the outcome and θ at key points.

    ``params``: parameter dicts (before projection) at "plateau", "last_plateau" (where they exist) and "end";
    ``profiles``: ``lag_profile`` of the projection at the same points.
    """

    result: TrainResult
    points: list[EscapePoint]
    outcome: EscapeOutcome
    params: dict[str, Params]
    profiles: dict[str, dict] = field(default_factory=dict)

    def at(self, index: int | None) -> EscapePoint | None:
        return None if index is None else self.points[index]

    @property
    def observed(self) -> str:
        """"escaped" iff the test loss went clearly below H(π), else "trapped"."""
        return "escaped" if self.outcome.escape is not None else "trapped"

    def step_of(self, index: int | None) -> int | None:
        return None if index is None else self.points[index].step

    def matches(self, index: int | None) -> bool | None:
        """Does the prediction at evaluation ``index`` match the observed outcome?  None if undecided."""
        said = prediction(self.at(index))
        if said in (None, UNDECIDED):
            return None
        return (said == ESCAPES) == (self.observed == "escaped")

    def as_dict(self) -> dict:
        """JSON-ready summary: the key points, the outcome, every evaluation (parameters left out)."""
        def summary(index: int | None) -> dict | None:
            point = self.at(index)
            return None if point is None else point.as_dict() | {"prediction": prediction(point),
                                                                 "matches": self.matches(index)}

        def keyed(name: str, index: int | None) -> dict | None:
            entry = summary(index)
            return None if entry is None else entry | {"profile": self.profiles.get(name)}

        crossing, escape = self.step_of(self.outcome.crossing), self.step_of(self.outcome.escape)
        return {
            "observed": self.observed, "final_loss": self.result.final_loss,
            "unigram_test_loss": self.result.reference_test_loss["unigram"],
            "first_plateau": summary(self.outcome.first_plateau), "plateau": keyed("plateau", self.outcome.plateau),
            "last_plateau": keyed("last_plateau", self.outcome.last_plateau),
            "end": keyed("end", len(self.points) - 1), "crossing_step": crossing, "escape_step": escape,
            "lead_steps": None if crossing is None or escape is None else escape - crossing,
            "trajectory": [point.as_dict() for point in self.points],
        }


def track_escape(source: Source, config: TrainConfig, band: float, *, progress=None) -> EscapeRun:
    """Train a tied model (any depth, memory, layer norm) on a binary source and measure the M_π curvature at every
    evaluation; the lag profile (``lag_profile``) at the plateau, the last plateau point and the end.

    ``band``: β of ``escape_outcome``.  The reference U is the unigram predictor's loss on the run's
    test sequences (``TrainResult.reference_test_loss``).
    """
    if not config.tying or config.embedding != "scalar":
        raise InvalidInputError("the escape study tracks the tied scalar model (the M_π formula's model)")
    binary_source(None, None, source)
    recorder = EscapeRecorder(source, config.memory)
    result = train(source, config, progress=progress, on_eval=recorder)
    outcome = escape_outcome(recorder.points, result.reference_test_loss["unigram"], band)
    keep = {"plateau": outcome.plateau, "last_plateau": outcome.last_plateau, "end": len(recorder.points) - 1}
    params = {name: recorder.snapshots[i] for name, i in keep.items() if i is not None}
    profiles = {}
    for name, theta in params.items():
        point = project_to_manifold(theta, tying=True, source=source)
        curvature = manifold_curvature(point, tying=True, source=source, memory=config.memory)
        profiles[name] = lag_profile(point, curvature, source, config.memory)
    return EscapeRun(result, recorder.points, outcome, params, profiles)
