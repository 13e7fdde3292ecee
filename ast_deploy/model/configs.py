"""Released AST architectures: constructor keywords as the official training scripts use them."""

from __future__ import annotations

AST_B = dict(img_size=128, embed_dim=32, depths=[1, 2, 8, 8, 2, 8, 8, 2, 1], win_size=8, token_mlp="frfn")
AST_T = dict(img_size=128, embed_dim=16, depths=[2, 2, 2, 2, 2, 2, 2, 2, 2], win_size=8, token_mlp="frfn")

ARCHITECTURES: dict[str, dict] = {"AST_B": AST_B, "AST_T": AST_T}
