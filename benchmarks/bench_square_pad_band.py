"""The dark band square-pad leaves on the left of outputs (README, Runner): the demo checkpoint on
200x300 crops of three scikit-image photos, each protocol against the same pixels restored inside
the whole photo; column means in 1/255. Results: benchmarks/RESULTS.md, "Reliability"."""

import numpy as np, torch
from skimage import data
from ast_deploy.demo import DEMO_CONFIG, demo_weights
from ast_deploy.model import AST, load_checkpoint
from ast_deploy.protocols import parse_protocol
torch.set_num_threads(2)
demo = load_checkpoint(AST(**DEMO_CONFIG), demo_weights("derain")).eval()
run = lambda b: demo(torch.from_numpy(np.ascontiguousarray(b))).numpy()
cases = {"astronaut 200x300 at (100,100)": (data.astronaut(), (100, 300, 100, 400)),
         "coffee 200x300 at (100,100)": (data.coffee(), (100, 300, 100, 400)),
         "chelsea 200x300 at (50,100)": (data.chelsea(), (50, 250, 100, 400))}
with torch.no_grad():
    for name, (img, (y0, y1, x0, x1)) in cases.items():
        full = (img.astype(np.float32) / 255).transpose(2, 0, 1)[None]
        full = full[:, :, : full.shape[2] // 64 * 64, : full.shape[3] // 64 * 64]
        crop = full[:, :, y0:y1, x0:x1]
        ctx = run(full)[:, :, y0:y1, x0:x1]
        for proto in ("square-pad:128", "square-pad:64", "pad:64"):
            out = parse_protocol(proto).run(crop, run)
            d = (out - ctx) * 255
            cols = [float(d[..., c].mean()) for c in range(6)]
            band = next((c for c in range(d.shape[-1]) if abs(d[..., c].mean()) < 1), None)
            print(f"{name:32s} {proto:15s} col0 mean {cols[0]:+6.1f}/255  cols0-5 {[round(c,1) for c in cols]}  "
                  f"|d| p95 col0 {np.percentile(np.abs(d[...,0]),95):5.1f}  band<1/255 from col {band}  right col {float(d[...,-1].mean()):+5.1f}")
