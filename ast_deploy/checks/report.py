"""Writing a parity report: JSON (everything), JUnit XML (one test case per image, for CI), text
(ast-check's table per image, ast-export's table per validation batch)."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

from ..fileio import atomic_write
from .parity import ParityReport, format_value


def json_safe(value):
    """``value`` with its non-finite floats as strings ("inf", "-inf", "nan"): strict JSON has none
    (identical outputs have PSNR inf, a non-finite output -inf)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def write_json(report: ParityReport, path):
    """Write the whole report as strict JSON (infinities as strings); returns the path."""
    return atomic_write(path, json.dumps(json_safe(report.to_dict()), indent=2, allow_nan=False) + "\n")


def junit_xml(report: ParityReport) -> str:
    suite = ET.Element("testsuite", name="ast-check", tests=str(len(report.cases) + 1),
                       failures=str(sum(not c.passed for c in report.cases) + (not report.outputs_valid)))
    ET.SubElement(suite, "properties")
    for key in ("reference", "candidate", "precision"):
        ET.SubElement(suite.find("properties"), "property", name=key, value=str(getattr(report, key)))
    valid = ET.SubElement(suite, "testcase", classname=f"ast-check.{report.precision}", name="outputs are finite")
    if not report.outputs_valid:
        ET.SubElement(valid, "failure", message="NaN or Inf in an output (see the log)")
    for case in report.cases:
        h, w = case.size
        tc = ET.SubElement(suite, "testcase", classname=f"ast-check.{report.precision}", name=f"{case.name} ({h}x{w})")
        if not case.passed:
            failure = ET.SubElement(tc, "failure", message="; ".join(case.failures))
            failure.text = json.dumps(json_safe(case.to_dict()), indent=2)
        else:
            out = ET.SubElement(tc, "system-out")
            out.text = json.dumps(json_safe(case.parity))
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(report: ParityReport, path) -> None:
    atomic_write(path, junit_xml(report))


def text_table(report: ParityReport) -> str:
    rows = [("image", "size", "PSNR dB", "SSIM", "max abs", "rel", "GT PSNR ref/cand", "result")]
    for c in report.cases:
        p = c.parity
        gt = c.ground_truth
        rows.append((c.name, f"{c.size[0]}x{c.size[1]}",
                     format_value(p["psnr"]) if p else "-", f"{p['ssim']:.5f}" if p else "-",
                     f"{p['max_abs']:.2e}" if p else "-", f"{p['rel']:.2e}" if p else "-",
                     f"{format_value(gt['reference']['psnr'])}/{format_value(gt['candidate']['psnr'])}" if gt else "-",
                     "ok" if c.passed else "FAIL: " + "; ".join(c.failures)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(r, widths)) + "  " + r[-1] for r in rows]
    t = report.tolerance
    verdict = "PASS" if report.passed else "FAIL"
    lines.append(f"{verdict}: {report.candidate} vs {report.reference}, {report.precision}, "
                 f"PSNR >= {t.psnr_min:g} dB" + ("" if report.outputs_valid else "; NaN/Inf in the outputs"))
    return "\n".join(lines)


def export_table(report: ParityReport, labels: tuple[str, str] = ("torch", "onnx")) -> str:
    """One row per validation batch: shape, max abs, max rel, PSNR, each side's time, result; then the
    tolerance and the verdict (what ast-export prints)."""
    t = report.tolerance
    head = (f"{'input (NCHW)':<20} {'max abs':>10} {'max rel':>10} {'PSNR dB':>9} {labels[0] + ' ms':>9} "
            f"{labels[1] + ' ms':>9}  result")
    lines = [head, "-" * len(head)]
    for c in report.cases:
        p, s = c.parity, c.seconds or {}
        ms = [f"{s[k] * 1e3:>9.0f}" if k in s else f"{'-':>9}" for k in ("reference", "candidate")]
        cells = (f"{p['max_abs']:>10.2e} {p['rel']:>10.2e} {format_value(p['psnr'], 1):>9}" if p
                 else f"{'-':>10} {'-':>10} {'-':>9}")
        lines.append(f"{'x'.join(map(str, c.shape)):<20} {cells} {ms[0]} {ms[1]}  "
                     + ("ok" if c.passed else "FAIL: " + "; ".join(c.failures)))
    limits = f"PSNR >= {t.psnr_min:g} dB (data range 1)" + (f", max rel <= {t.max_rel:g}" if t.max_rel is not None else "")
    lines.append(f"tolerance ({report.precision}): {limits}"
                 + ("" if report.outputs_valid else "; NaN/Inf in the outputs")
                 + f" -> {'PASS' if report.passed else 'FAIL'}")
    return "\n".join(lines)
