"""AST architectures by name: constructor keywords as the official training scripts use them, and
the project's small demo model."""

from __future__ import annotations

AST_B = dict(img_size=128, embed_dim=32, depths=[1, 2, 8, 8, 2, 8, 8, 2, 1], win_size=8, token_mlp="frfn")
AST_T = dict(img_size=128, embed_dim=16, depths=[2, 2, 2, 2, 2, 2, 2, 2, 2], win_size=8, token_mlp="frfn")
# The demo weights' model (ast_deploy.demo). img_size=64 makes the size multiple 64 (not the released
# models' 128) so that training runs on 64x64 crops; the bottleneck is kept shallow because its 128
# channels hold most of the parameters.
AST_DEMO = dict(img_size=64, embed_dim=8, depths=[2, 2, 1, 1, 1, 1, 2, 2, 2], win_size=8,
                mlp_ratio=2.0, token_mlp="frfn")

RELEASED = ("AST_B", "AST_T")  # the paper's architectures
ARCHITECTURES: dict[str, dict] = {"AST_B": AST_B, "AST_T": AST_T, "demo": AST_DEMO}
