"""Adversarial training of a generator written as a Pyro program, against a discriminator network."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import pyro
import pyro.distributions as dist
import torch
from pyro.poutine.messenger import Messenger
from torch import nn
from torch.nn import functional as F

from bayesgen._counts import check_count
from bayesgen.engine import EngineResult, Problem
from bayesgen.generate import local_latents
from bayesgen.inference._steps import checkpointing_of, load_param_store, param_store, run_steps
from bayesgen.inference._threads import PARALLEL_MIN_ELEMENTS, cpu_threads
from bayesgen.marginal import per_observation
from bayesgen.program import is_latent, on_device

__all__ = ["GAN"]

#: The discriminators known by name; any other is an ``nn.Module`` given by the user.
DISCRIMINATORS = ("mlp",)
#: The adversarial objectives.
LOSSES = ("nonsaturating", "wasserstein")
#: Units in each of the two hidden layers of the ``"mlp"`` discriminator.
MLP_HIDDEN = 256
#: A discriminator whose mean loss over the last steps is below this tells every real
#: observation from every fake one: the generator's gradient has vanished (the fit failed).
_DISCRIMINATOR_WON = 1e-2
#: Adam's ``betas`` per loss, those of DCGAN (Radford et al. 2016) and WGAN-GP (Gulrajani et al.
#: 2017): less momentum than Adam's default 0.9, whose inertia carries each player past the other's
#: moves, so that the two-player game oscillates.
_BETAS = {"nonsaturating": (0.5, 0.999), "wasserstein": (0.5, 0.9)}


@dataclass(frozen=True, kw_only=True)
class GAN:
    """Generative adversarial training of a Pyro program's networks against a discriminator.

    Goodfellow et al. (2014), "Generative adversarial nets". The program is the generator: its
    latent sites are the noise (``z ~ Normal(0, I)`` per observation, so each must lie in the
    plate of the observations and have a reparameterised sampler) and its observed site, run
    with the noise, gives fake observations. The parameters it registers with
    ``pyro.module``/``PyroModule``/``pyro.param`` are trained so that a discriminator network
    cannot tell its fakes from the data. The likelihood is never evaluated and the noise never
    integrated out, so the fit is judged by two-sample tests (``bg.evaluate``'s ``c2st`` and
    ``mmd`` columns); its ``lpd`` is NaN.

    Each step draws ``batch_size`` real observations (rows of the observed argument, and the
    same rows of every tensor argument with as many rows), runs the program on them with its
    observed site drawn afresh instead of observed (the fakes: as many as the real ones),
    updates the discriminator (``num_critic`` times, each on a new batch) and then the
    generator, each with its own Adam. The fakes must carry the generator's gradient: a site
    with a reparameterised sampler (Normal, ...) is drawn with it, a Bernoulli site with
    ``RelaxedBernoulliStraightThrough`` (Jang et al. 2017; Maddison et al. 2017): 0/1 values
    forward, as the data are, the gradient of a relaxed sample at ``temperature`` backward.
    Other families (discrete ones without a relaxation) are refused.

    The result is a point estimate of the weights (``kind="point"``, no draws): they are in
    ``fit.params``, and ``fit.generate`` draws the noise from its prior and runs the program.
    ``sample_stats`` holds the generator's ``loss`` and the ``discriminator_loss`` of each
    step; ``info["converged"]`` is False where they are not finite, the discriminator tells
    every fake from the data (a GAN's losses settle at an equilibrium, not a minimum), or the run
    took fewer than two of its windows of ``max(10, num_steps // 20)`` steps.

    Parameters
    ----------
    num_steps : int
        Generator updates.
    batch_size : int
        Real (and fake) observations per step; all of them when the data hold fewer.
    lr : float
        Adam's learning rate, for the generator and the discriminator alike.
    loss : str
        The objective of the two players, "nonsaturating" or "wasserstein". "nonsaturating":
        the discriminator minimises the cross-entropy of real against fake (plus the R1
        penalty, see ``gp_weight``), the generator ``softplus(-D(fake))``, whose gradient does
        not vanish when the discriminator wins (Goodfellow et al. 2014, section 3).
        "wasserstein": the critic minimises ``D(fake) - D(real)`` plus the gradient penalty,
        the generator ``-D(fake)`` (WGAN-GP, Gulrajani et al. 2017).
    discriminator : str or torch.nn.Module
        "mlp" (the observation flattened, two hidden layers of 256 units with LeakyReLU(0.2),
        one output; its initial weights drawn from ``seed``), or a module that maps a batch of
        observations ``(B, *shape of one observation)`` to one logit or critic value each,
        ``(B,)`` or ``(B, 1)``. A copy of the module is trained (on the data's device and
        dtype), so the one passed keeps its weights and a seed gives one fit.
    num_critic : int, optional
        Discriminator updates per generator update; None gives 1 for "nonsaturating" and 5
        for "wasserstein" (the critic must stay near its optimum for its value to estimate
        the Wasserstein distance).
    gp_weight : float
        Weight of the discriminator's gradient penalty; 0 turns it off. "nonsaturating": R1,
        ``gp_weight / 2 * |grad D(x)|^2`` at the real observations (Mescheder, Geiger and
        Nowozin 2018), which keeps the discriminator from overpowering the generator (without
        it the digits' generator collapsed to a few shapes). "wasserstein":
        ``gp_weight * (|grad D(x)| - 1)^2`` at random points between real and fake
        observations, which keeps the critic 1-Lipschitz.
    temperature : float
        Temperature of the relaxed Bernoulli whose gradient stands in for a binary site's:
        a lower one is closer to the hard samples (less biased) but gives noisier gradients.
    checkpoint : str or None
        A file to which both players' weights, their optimisers' state and the random state are
        saved every ``checkpoint_every`` steps and at the end, each time atomically.
    checkpoint_every : int
        Steps between checkpoints.
    resume : str or None
        A checkpoint of a run with the same settings and seed to continue from, bit for bit.
    """

    name: ClassVar[str] = "gan"
    num_steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    loss: str = "nonsaturating"
    discriminator: Any = "mlp"
    num_critic: int | None = None
    gp_weight: float = 10.0
    temperature: float = 0.5
    checkpoint: str | None = None
    checkpoint_every: int = 500
    resume: str | None = None

    def __post_init__(self) -> None:
        counts = {"num_steps": self.num_steps, "batch_size": self.batch_size,
                  "num_critic": 1 if self.num_critic is None else self.num_critic}
        for option, value in counts.items():
            check_count(f"engine 'gan': {option}", value)
        for option, value in (("lr", self.lr), ("temperature", self.temperature), ("gp_weight", self.gp_weight)):
            kind = "non-negative" if option == "gp_weight" else "positive"
            if not (isinstance(value, (int, float)) and math.isfinite(value)
                    and (value > 0 or value == 0 and kind == "non-negative")):
                raise ValueError(f"engine 'gan': {option} must be a {kind} number, got {value!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"engine 'gan': unknown loss {self.loss!r}; use one of {', '.join(map(repr, LOSSES))}")
        known = ", ".join(map(repr, DISCRIMINATORS))
        if isinstance(self.discriminator, str) and self.discriminator not in DISCRIMINATORS:
            raise ValueError(f"engine 'gan': unknown discriminator {self.discriminator!r}; use one of {known} "
                             "or a torch.nn.Module that maps a batch of observations to one value each")
        if not isinstance(self.discriminator, (str, nn.Module)):
            raise TypeError(f"engine 'gan': discriminator must be a name ({known}) or a torch.nn.Module, "
                            f"got {type(self.discriminator).__name__}")

    def run(self, problem: Problem, *, seed: int, progress: bool) -> EngineResult:
        """Train the program's networks adversarially; the trained weights stay in Pyro's param store."""
        started = time.perf_counter()
        site = _check_program(problem)
        # a step on a small batch is many small operations: on the CPU, one thread (see _threads)
        elements = self.batch_size * problem.prototype.nodes[site]["value"][0].numel()
        small = elements < PARALLEL_MIN_ELEMENTS and problem.device.type == "cpu"
        with cpu_threads(1 if small else torch.get_num_threads()):
            game = _Game(self, problem, site, seed)
            steps = run_steps(game.step, self.num_steps, progress=progress, desc="gan",
                              checkpointing=checkpointing_of(self, seed, problem), state=game)
        losses = steps.losses
        del game.d_losses[len(losses):]  # a round that Ctrl-C cut after the discriminator's step
        window = max(10, self.num_steps // 20)
        g_recent, d_recent = _mean(losses[-window:]), _mean(game.d_losses[-window:])
        won = self.loss == "nonsaturating" and d_recent < _DISCRIMINATOR_WON
        message = (f"final generator loss {g_recent:.4g}, discriminator loss {d_recent:.4g} "
                   f"(means of the last {min(window, len(losses))} steps)")
        if won:
            message += "; the discriminator tells every fake from the data, so the generator gets no gradient"
        short = len(losses) < 2 * window  # too few rounds to see the losses settle (svi asks as many)
        if short:
            message += f"; fewer than {2 * window} steps to judge by"
        return EngineResult(
            kind="point", draws={},
            sample_stats={"loss": torch.tensor(losses)[None],
                          "discriminator_loss": torch.tensor(game.d_losses)[None]},
            timing={"optimize": time.perf_counter() - started},
            info={"converged": math.isfinite(g_recent) and math.isfinite(d_recent) and not won and not short,
                  "message": message, **steps.info(self.num_steps)},
        )


class _Game:
    """The two players and their optimisers; :meth:`step` is one round, discriminator then generator."""

    def __init__(self, engine: GAN, problem: Problem, site: str, seed: int) -> None:
        self.engine = engine
        self.problem = problem
        self.site = site
        data = problem.data[problem.spec.observed[site]]
        self.total, self.size = len(data), min(engine.batch_size, len(data))
        self.rows = [key for key, value in problem.data.items() if per_observation(value, self.total)]
        self.batches = torch.Generator().manual_seed(seed)
        real, _ = self.play(grad=False)  # the first run registers the generator's parameters
        self.critic = _discriminator(engine.discriminator, real, seed)
        self.trainable = [p for p in self.critic.parameters() if p.requires_grad]
        weights = [value for _, value in pyro.get_param_store().named_parameters()]
        betas = _BETAS[engine.loss]
        self.g_optim = torch.optim.Adam(weights, lr=engine.lr, betas=betas)
        self.d_optim = torch.optim.Adam(self.trainable, lr=engine.lr, betas=betas)
        default = 5 if engine.loss == "wasserstein" else 1
        self.num_critic = engine.num_critic if engine.num_critic is not None else default
        self.d_losses: list[float] = []

    def state_dict(self) -> dict[str, Any]:
        """Both players' weights, their optimisers, the minibatches' and torch's random states."""
        return {**param_store(), "critic": self.critic.state_dict(), "g_optim": self.g_optim.state_dict(),
                "d_optim": self.d_optim.state_dict(), "batches": self.batches.get_state(),
                "d_losses": torch.tensor(self.d_losses, dtype=torch.float64)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s state (the generator's parameters exist from the first run)."""
        load_param_store(state)
        self.critic.load_state_dict(state["critic"])
        self.g_optim.load_state_dict(state["g_optim"])
        self.d_optim.load_state_dict(state["d_optim"])
        self.batches.set_state(state["batches"])
        self.d_losses = state["d_losses"].tolist()

    def play(self, *, grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(real, fake)`` observations of a new minibatch: the program run on its rows (of every
        argument with one row per observation), the observed site drawn instead of observed."""
        index = torch.randperm(self.total, generator=self.batches)[:self.size].to(self.problem.device)
        data = {**self.problem.data, **{key: self.problem.data[key][index] for key in self.rows}}
        fake = _Fake(self.site, self.engine.temperature)
        with torch.set_grad_enabled(grad), on_device(self.problem.device), fake:
            self.problem.spec.model(**data)
        if fake.real is None or fake.fake is None:
            raise ValueError(f"engine 'gan': a run of the program did not reach its observed site '{self.site}'")
        return fake.real, fake.fake

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """The discriminator's value of each observation, ``(B,)``."""
        return self.critic(x).reshape(len(x))

    def step(self) -> float:
        """``num_critic`` discriminator updates, then one generator update; returns the generator's loss."""
        for p in self.trainable:
            p.requires_grad_(True)
        for k in range(self.num_critic):
            real, fake = self.play(grad=k == self.num_critic - 1)  # the last fakes serve the generator too
            d_loss = _discriminator_loss(self.engine, self.score, real, fake.detach())
            self.d_optim.zero_grad()
            d_loss.backward()
            self.d_optim.step()
        self.d_losses.append(float(d_loss.detach()))
        for p in self.trainable:  # the generator's update needs no gradient of the discriminator's weights
            p.requires_grad_(False)
        out = self.score(fake)
        g_loss = F.softplus(-out).mean() if self.engine.loss == "nonsaturating" else -out.mean()
        self.g_optim.zero_grad()
        g_loss.backward()
        self.g_optim.step()
        return float(g_loss.detach())


def _discriminator_loss(engine: GAN, score: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                        fake: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (real labelled 1, fake 0) plus the R1 penalty, or the critic's Wasserstein loss
    plus the gradient penalty at random points between real and fake."""
    if engine.loss == "nonsaturating":
        real = real.detach().requires_grad_(engine.gp_weight > 0)
        out = score(real)
        loss = F.softplus(-out).mean() + F.softplus(score(fake)).mean()
        if engine.gp_weight > 0:
            (grad,) = torch.autograd.grad(out.sum(), real, create_graph=True)
            loss = loss + engine.gp_weight / 2 * grad.reshape(len(grad), -1).pow(2).sum(1).mean()
        return loss
    loss = score(fake).mean() - score(real).mean()
    if engine.gp_weight > 0:
        mix = torch.rand((len(real),) + (1,) * (real.dim() - 1), dtype=real.dtype, device=real.device)
        between = (mix * real + (1 - mix) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(score(between).sum(), between, create_graph=True)
        loss = loss + engine.gp_weight * (grad.reshape(len(grad), -1).norm(dim=1) - 1).pow(2).mean()
    return loss


def _discriminator(choice: str | nn.Module, real: torch.Tensor, seed: int) -> nn.Module:
    """The network to train, on the data's device and dtype: "mlp" (observation flattened, two
    LeakyReLU(0.2) layers, one logit) built from ``seed``, torch's global generator left as it was,
    or a copy of the given module; checked to give one value per observation of ``real``."""
    if isinstance(choice, nn.Module):
        module = copy.deepcopy(choice)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = nn.Sequential(nn.Flatten(), nn.Linear(real[0].numel(), MLP_HIDDEN), nn.LeakyReLU(0.2),
                                   nn.Linear(MLP_HIDDEN, MLP_HIDDEN), nn.LeakyReLU(0.2), nn.Linear(MLP_HIDDEN, 1))
    module = module.to(device=real.device, dtype=real.dtype)
    with torch.no_grad():
        try:
            out = module(real)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise ValueError(f"engine 'gan': the discriminator fails on a batch of observations of shape "
                             f"{tuple(real.shape)} ({type(exc).__name__}: {exc}); it must take the observed "
                             "site's values, one observation per row") from exc
    if not isinstance(out, torch.Tensor) or tuple(out.shape) not in ((len(real),), (len(real), 1)):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"engine 'gan': the discriminator must map a batch of observations {tuple(real.shape)} "
                         f"to one value each, shape ({len(real)},) or ({len(real)}, 1), got {shape}")
    return module


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _check_program(problem: Problem) -> str:
    """The observed site, after checking that the program can be a generator: parameters to train,
    one observed site with observations along the first dimension of its argument whose draws can
    carry a gradient, and only local latents (noise), each with a reparameterised sampler."""
    name = f"'{problem.spec.name}'"
    observed = list(problem.spec.observed)
    if len(observed) != 1:
        raise ValueError(f"engine 'gan' needs a program with exactly one observed site (the generated "
                         f"observations), but {name} has {len(observed)}: {observed}")
    if not problem.has_params:
        raise ValueError(f"engine 'gan' trains the networks of the program {name}, but it registers no "
                         "parameters: build its generator with pyro.module (or PyroModule) or pyro.param")
    (site,) = observed
    argument = problem.spec.observed[site]
    node = problem.prototype.nodes[site]
    data = problem.data.get(argument)
    if not isinstance(data, torch.Tensor) or data.dim() == 0 or node["value"].dim() == 0:
        raise ValueError(f"engine 'gan' draws minibatches of the observations of site '{site}' along the first "
                         f"dimension of argument '{argument}', but it has none")
    _relaxed(node["fn"], 1.0, site)  # raises for a family the generator cannot be trained through
    local = local_latents(problem.prototype, observed)
    for latent, node in problem.prototype.nodes.items():
        if is_latent(node) and latent not in local:
            raise ValueError(f"engine 'gan' fits network weights, but latent site '{latent}' of {name} is global "
                             f"(outside the plate of the observations of '{site}'): a GAN has no posterior for it; "
                             "make it a pyro.param, or fit the program with engine 'svi' or 'nuts'")
        if is_latent(node) and not getattr(node["fn"], "has_rsample", False):
            raise ValueError(f"engine 'gan' back-propagates through the generator's noise, but latent site "
                             f"'{latent}' of {name} ({type(node['fn']).__name__}) has no reparameterised sampler")
    return site


def _relaxed(fn: Any, temperature: float, site: str) -> Any:
    """``fn`` with a differentiable sampler: a Bernoulli (inside any ``Independent``) becomes a
    ``RelaxedBernoulliStraightThrough`` with its logits; a reparameterised family stays as it is."""
    if isinstance(fn, dist.Independent):
        return _relaxed(fn.base_dist, temperature, site).to_event(fn.reinterpreted_batch_ndims)
    if isinstance(fn, dist.Bernoulli):
        logits = fn.logits
        return dist.RelaxedBernoulliStraightThrough(
            torch.as_tensor(temperature, dtype=logits.dtype, device=logits.device), logits=logits)
    if getattr(fn, "has_rsample", False):
        return fn
    raise ValueError(f"engine 'gan' back-propagates through the generated observations, but site '{site}' "
                     f"is {type(fn).__name__}, which has no reparameterised or relaxed sampler; "
                     "supported: Bernoulli (relaxed, straight-through) and families with rsample")


class _Fake(Messenger):
    """At the observed site, keep the real value and put a differentiable draw in its place."""

    def __init__(self, site: str, temperature: float) -> None:
        super().__init__()
        self.site = site
        self.temperature = temperature
        self.real: torch.Tensor | None = None
        self.fake: torch.Tensor | None = None

    def _pyro_sample(self, msg: Any) -> None:
        if msg["name"] != self.site:
            return
        self.real = msg["value"]
        self.fake = _relaxed(msg["fn"], self.temperature, self.site).rsample()
        msg["value"] = self.fake
        msg["is_observed"] = False
        msg["done"] = True
