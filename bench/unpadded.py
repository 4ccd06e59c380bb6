"""Measured and dropped: the BERT encoder over real tokens only, with one fused QKV Linear.

Run from the repository root, on a CPU with native bf16:
``python -m bench.unpadded --corpus ../shared/data/polnear/train/text [--articles 100] [--rounds 5]``.

A pass pads its rows to the longest (and, in bf16, widths and rows to multiples of 8): 17.7 % of the
NER tokens and 14.7 % of the stance tokens at N=10,000 (bench/RESULTS.md). Here each encoder layer
runs its Linear layers, GELU and layer norms on the real tokens only, gathered into one (tokens,
hidden) matrix, and scatters them back into the padded layout only for attention (SDPA with the
mask); the query, key and value weights are one Linear of 3 x hidden outputs. Both models are the
pipeline's bf16 models (``models.to_bf16``, packed where bf16 is native) and run the pipeline's
passes (``bench.packed.compare``): outputs compared, then alternating timed rounds.

On the 2-core AMX VM (2026-12-03): labels the same, medians 1.00x (NER) and 1.03x (stance), within
the VM's noise, so the pipeline keeps transformers' own forward (bench/RESULTS.md "Packed bf16
weights"). The last line is bench.packed's, with ``unpadded`` as the second model.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from bench.packed import arguments, compare
from pipeline import models, onednn
from pipeline.evaluate import corpus_texts


def _linear(layer: nn.Module) -> nn.Linear:
    return layer.unpacked() if isinstance(layer, onednn.PackedLinear) else layer


def fused_qkv(self_attention: nn.Module) -> nn.Module:
    """One Linear (packed where it can be) whose outputs are the query, key and value projections."""
    parts = [_linear(self_attention.query), _linear(self_attention.key), _linear(self_attention.value)]
    fused = nn.Linear(parts[0].in_features, sum(p.out_features for p in parts), dtype=parts[0].weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(torch.cat([p.weight for p in parts]))
        fused.bias.copy_(torch.cat([p.bias for p in parts]))
    return onednn.PackedLinear(fused) if onednn.can_pack() else fused


@dataclasses.dataclass(eq=False)
class UnpaddedModel(models.LoadedModel):
    """A bf16 BERT ``LoadedModel`` whose forward skips the padding outside attention."""

    qkv: list[nn.Module] = dataclasses.field(default_factory=list, repr=False)

    @classmethod
    def of(cls, loaded: models.LoadedModel) -> "UnpaddedModel":
        fields = {f.name: getattr(loaded, f.name) for f in dataclasses.fields(models.LoadedModel)}
        fields["name"] = f"{loaded.name}+unpadded"
        layers = loaded.model.base_model.encoder.layer
        return cls(**fields, qkv=[fused_qkv(layer.attention.self) for layer in layers])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, case_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, first_tokens: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        if position_ids is not None or first_tokens is not None:
            raise ValueError("the unpadded encoder takes an input a row (pack_rows off)")
        bert = self.model.base_model
        rows, width = input_ids.shape
        embedded = bert.embeddings.word_embeddings(input_ids)
        if self.case_embeddings is not None and case_ids is not None:
            embedded = embedded + self.case_embeddings(case_ids)
        x = bert.embeddings(inputs_embeds=embedded)  # positions, token types, layer norm
        hidden = x.shape[-1]
        real = attention_mask.reshape(-1).nonzero().squeeze(1)  # the real tokens' places in rows x width
        x = x.reshape(rows * width, hidden).index_select(0, real)
        mask = attention_mask.bool()[:, None, None, :]
        for layer, qkv in zip(bert.encoder.layer, self.qkv):
            heads = layer.attention.self.num_attention_heads
            projected = x.new_zeros(rows * width, 3 * hidden).index_copy_(0, real, qkv(x))
            query, key, value = projected.view(rows, width, 3, heads, hidden // heads).permute(2, 0, 3, 1, 4)
            context = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
            context = context.transpose(1, 2).reshape(rows * width, hidden).index_select(0, real)
            x = layer.attention.output.LayerNorm(layer.attention.output.dense(context) + x)
            x = layer.output.LayerNorm(layer.output.dense(layer.intermediate.intermediate_act_fn(layer.intermediate.dense(x))) + x)
        states = x.new_zeros(rows * width, hidden).index_copy_(0, real, x).view(rows, width, hidden)
        if self.task == "ner":
            return self.model.classifier(states).float()
        return self.model.classifier(bert.pooler(states)).float()


def padded_and_unpadded(task: str) -> tuple[models.LoadedModel, models.LoadedModel]:
    # a window a row on both sides: the unpadded encoder takes (rows, width) masks only
    bf16 = dataclasses.replace(models.to_bf16(models.load_model(task, None, "fp32")), pack_rows=False)
    return bf16, UnpaddedModel.of(bf16)


def main(argv: list[str] | None = None) -> int:
    args = arguments("python -m bench.unpadded", __doc__.split("\n\n")[0], ("padded", "unpadded"), argv)
    texts = corpus_texts(args.corpus, args.articles)
    print(compare(texts, padded_and_unpadded("ner"), padded_and_unpadded("stance"), args.rounds,
                  ("padded", "unpadded")).last_line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
