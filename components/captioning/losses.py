"""Caption training objectives: pure functions of model outputs and targets.

Nothing here owns parameters or optimisers; :func:`caption_loss` combines the
terms for :mod:`components.captioning.train`.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from components.captioning.models import CaptionOutput
from components.data.text import Vocab


@dataclasses.dataclass(frozen=True, kw_only=True)
class LossConfig:
    """Weights of the caption objective.

    Attributes:
        label_smoothing: epsilon of label smoothing (Szegedy et al. 2016), 0 for plain NLL.
        attention_penalty: lambda of the doubly stochastic attention penalty
            (Xu et al. 2015, eq. 14); ignored for models without attention.
        pad_id: Target id that carries no loss.
    """

    label_smoothing: float = 0.0
    attention_penalty: float = 1.0
    pad_id: int = Vocab.pad_id

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.attention_penalty < 0.0:
            raise ValueError(f"attention_penalty must be >= 0, got {self.attention_penalty}")


def masked_cross_entropy(logits: Tensor, targets: Tensor, *, pad_id: int = Vocab.pad_id,
                         label_smoothing: float = 0.0) -> Tensor:
    """Token-level cross-entropy averaged over the non-pad targets.

    With label smoothing (Szegedy et al. 2016, sec. 7) the target distribution
    is ``(1 - eps) * onehot(y) + eps / V`` over all ``V`` ids, i.e. per token
    ``(1 - eps) * (-log p_y) + eps * mean_v(-log p_v)`` (PyTorch's definition).

    Args:
        logits: ``(B, T, V)`` unnormalised scores (any float dtype; computed in float32).
        targets: ``(B, T)`` ids; positions equal to ``pad_id`` are ignored.
        pad_id: The padding id.
        label_smoothing: epsilon in ``[0, 1)``.

    Returns:
        Scalar mean loss per non-pad token (0 when there is none).
    """
    vocab_size = logits.shape[-1]
    total = F.cross_entropy(
        logits.reshape(-1, vocab_size).float(), targets.reshape(-1), ignore_index=pad_id,
        label_smoothing=label_smoothing, reduction="sum",
    )
    num_tokens = (targets != pad_id).sum().clamp_min(1)
    return total / num_tokens


def doubly_stochastic_penalty(alphas: Tensor, mask: Tensor | None = None) -> Tensor:
    """Doubly stochastic attention regulariser (Xu et al. 2015, eq. 14), without lambda.

    ``sum_i (1 - sum_t alpha_ti)^2``: summed over positions ``i``, averaged over
    the batch. It pushes every position to receive, over the whole caption,
    about one unit of attention. Steps where ``mask`` is False (targets that are
    padding) do not count in ``sum_t``.

    Args:
        alphas: ``(B, T, P)`` attention weights per step.
        mask: ``(B, T)`` bool, True on real (non-pad) steps; None counts every step.

    Returns:
        Scalar penalty.
    """
    alphas = alphas.float()
    if mask is not None:
        alphas = alphas * mask[..., None].to(alphas.dtype)  # (B, T, P)
    coverage = alphas.sum(1)  # (B, P): sum_t alpha_ti
    return ((1.0 - coverage) ** 2).sum(1).mean()


def caption_loss(output: CaptionOutput, tokens: Tensor, *, cfg: LossConfig) -> dict[str, Tensor]:
    """The training objective of a caption model and its terms.

    Args:
        output: What the model returned for ``tokens``.
        tokens: ``(B, T)`` the captions fed to the model; targets are ``tokens[:, 1:]``.
        cfg: Loss weights.

    Returns:
        ``loss`` (what to back-propagate), ``cross_entropy`` (label-smoothed when
        ``cfg.label_smoothing > 0``), ``nll`` (plain negative log-likelihood per
        token, detached), ``attention_penalty`` (unweighted; 0 without attention),
        ``num_tokens`` (non-pad targets, for weighted averages).
    """
    targets = tokens[:, 1:]  # (B, T-1)
    mask = targets != cfg.pad_id  # (B, T-1)
    ce = masked_cross_entropy(output.logits, targets, pad_id=cfg.pad_id, label_smoothing=cfg.label_smoothing)
    if cfg.label_smoothing > 0.0:
        with torch.no_grad():
            nll = masked_cross_entropy(output.logits, targets, pad_id=cfg.pad_id)
    else:
        nll = ce.detach()
    loss = ce
    if output.alphas is not None:
        penalty = doubly_stochastic_penalty(output.alphas, mask)
        loss = loss + cfg.attention_penalty * penalty
    else:
        penalty = ce.new_zeros(())
    return {"loss": loss, "cross_entropy": ce, "nll": nll, "attention_penalty": penalty,
            "num_tokens": mask.sum()}


__all__ = ["LossConfig", "caption_loss", "doubly_stochastic_penalty", "masked_cross_entropy"]
