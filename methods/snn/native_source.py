"""The C source of the native neuron steps (methods/snn/native_steps.py builds and runs it).

One C function per :class:`~snnbench.methods.snn.fused.StepSignature`, generated from its
Python values; the expressions are those of :func:`fused.differential_step` /
:func:`fused.rate_step` with MT selection by comparisons
(:func:`~snnbench.methods.snn.quantizers.mt_fire_compare`), in the same order, in float32
(built with ``-ffp-contract=off``: no contraction to FMA), so spikes, state and counts equal the
compiled and eager steps bit for bit. With ``affine`` the step reads its input through a
per-channel ``fmaf(x, alpha[c], beta[c])`` or ``x * alpha[c] + beta[c]``: a BatchNorm folded into
the step, the very operations torch's CPU kernel or torchvision's FrozenBatchNorm2d compute
(methods/snn/input_norm.py checks them on this machine), plus, for a residual block's neuron, the
skip branch (as it is or through its own batch norm) added once rounded, as torch's ``add``.
"""

from __future__ import annotations

from snnbench.methods.snn import quantizers
from snnbench.methods.snn.fused import StepSignature

def _float(value: float) -> str:
    """A C float32 constant equal to ``torch.float32`` of the Python float (via double, as torch
    converts a Python scalar)."""
    return f"((float){float(value)!r})"


def _fire_lines(signature: StepSignature, lower: str | None, upper: str | None) -> list[str]:
    """C lines that set ``s`` from ``m`` and ``th`` (fused.fire in its compiled form)."""
    lines = []
    if signature.rule == "mt":
        boundary = _float(quantizers.MT_BOUNDARY)
        lines += ["const float mag = fabsf(m);", "const int positive = m > 0.0f;", "float level = 0.0f;"]
        has_room = lower is not None or upper is not None
        if has_room:
            lines.append(f"const float room = positive ? {upper or 'INFINITY'} : {lower or 'INFINITY'};")
        for k in range(signature.n - 1, -1, -1):
            room_test = f" & (room >= th{k})" if has_room else ""
            lines += [f"const float th{k} = th / {_float(2 ** k)};",
                      f"level = ((mag >= {boundary} * th{k}) & (th{k} > 0.0f){room_test}) ? th{k} : level;"]
        if not signature.signed:
            lines.append("level = positive ? level : 0.0f;")
        lines.append("const float s = m < 0.0f ? 0.0f - level : level;")
        return lines
    lines += ["const int live = th > 0.0f;",
              f"const int fire_pos = (m >= th) & live{f' & ({upper} >= th)' if upper else ''};",
              "float out = fire_pos ? th : 0.0f;"]
    if signature.signed:
        test = "m <= 0.0f" if signature.rule == "if_le" else "m < 0.0f"
        lines += [f"const int fire_neg = ({test}) & live{f' & ({lower} >= th)' if lower else ''};",
                  "out = fire_neg ? -th : out;"]
    lines.append("const float s = out;")
    return lines


#: the terms a folded input map may read: the convolution's output through its batch norm, a
#: residual branch as it is or through its own batch norm (methods/snn/input_norm.py)
_MAIN = {"fma": "fmaf(x[i], alpha_c, beta_c)", "mul_add": "(x[i] * alpha_c + beta_c)"}
_SKIP = {"x": "skip[i]", "fma": "fmaf(skip[i], alpha2_c, beta2_c)", "mul_add": "(skip[i] * alpha2_c + beta2_c)"}
#: every input map the steps are built for: "" (x itself), "fma" / "mul_add" (a batch norm) and
#: "<norm>+<skip>" (a batch norm plus a residual branch, added as torch adds two tensors: once rounded)
INPUT_MAPS = ("", *_MAIN, *(f"{main}+{skip}" for main in _MAIN for skip in _SKIP))


def input_expression(affine: str) -> str:
    """The C expression of the step's input for the input map ``affine`` (:data:`INPUT_MAPS`)."""
    if affine not in INPUT_MAPS:
        raise ValueError(f"unknown input map {affine!r}; expected one of {', '.join(map(repr, INPUT_MAPS))}")
    if not affine:
        return "x[i]"
    main, _, skip = affine.partition("+")
    return _MAIN[main] if not skip else f"{_MAIN[main]} + {_SKIP[skip]}"


def _body(signature: StepSignature, first: bool, affine: str = "") -> tuple[list[str], list[str]]:
    """The C lines of one element's step and the function's prologue. ``first``: the first step
    after the initial state, read instead of the state arrays: v from ``v0_row`` (the initial
    potential), Ē_in = b (the bias pass sets Ē_in to its input), Ē_out = C = 0. ``affine``: the
    input is ``fmaf(x, alpha_c, beta_c)`` ("fma") or ``x * alpha_c + beta_c`` ("mul_add", two
    roundings) (module docstring), else ``x`` as it is ("")."""
    differential = signature.coding == "differential"
    floor, ceiling = signature.floor, signature.ceiling
    v_load = "v0_row[p]" if first else "v[i]"
    body = [f"const float xv = {input_expression(affine)};"]
    if differential:
        body += ["const float d = xv - b_row[p];", f"const float eo = {'0.0f' if first else 'e_out[i]'};",
                 f"const float ei = {'b_row[p]' if first else 'e_in[i]'};",
                 f"const float m = ({v_load} + d) + (ei - eo);"]
        lower = upper = None
        if floor is not None and signature.signed:
            lower = f"((eo - {_float(floor)}) * t)" if floor else "(eo * t)"
        if ceiling is not None:
            upper = f"(({_float(ceiling)} - eo) * t)"
    else:
        body.append(f"const float m = {v_load} + xv;")
        lower = upper = None
        if signature.rooms:
            body.append(f"const float co = {'0.0f' if first else 'e_out[i]'};")
            if floor is not None and signature.signed:
                lower = "(co - floor_then)"
            if ceiling is not None:
                upper = "(ceiling_now - co)"
    body.append("const float th = th_row[p];")
    body += _fire_lines(signature, lower, upper)
    body += ["s_out[i] = s;", "v[i] = m - s;"]
    if differential:
        body += ["e_in[i] = ei + d * inv_t;", "e_out[i] = eo + s * inv_t;"]
    elif signature.rooms:
        body.append("e_out[i] = co + s;")
    if signature.count:
        unit = "th" if signature.rule != "mt" else f"(th / {_float(2 ** (signature.n - 1))})"
        body += ["const float a = fabsf(s);", "events += a > 0.0f;",
                 f"const float unit_raw = {unit};",
                 f"const float unit = unit_raw < {_float(1e-30)} ? {_float(1e-30)} : unit_raw;",
                 "units += (int32_t)(a / unit);"]
        if signature.positions:
            body.append("hits_row[p] += s != 0.0f;")
    prologue = ["const float inv_t = 1.0f / t;"] if differential else []
    if not differential and signature.rooms:
        if floor is not None and signature.signed:
            prologue.append(f"const float floor_then = {_float(floor)} * (t - 1.0f);")
        if ceiling is not None:
            prologue.append(f"const float ceiling_now = {_float(ceiling)} * t;")
    return body, prologue


def _function(signature: StepSignature, first: bool, affine: str = "") -> list[str]:
    """One step function: ``snn_step`` (state overwritten in place) or ``snn_first`` (the first
    step: the state read from its initial rows, written to fresh arrays). It walks the index
    space [rows, channels, outer, inner] (positions = outer·inner) in which every array but x is
    contiguous; x has its own four strides (a permuted attention view is read where it lies),
    with a unit inner stride as its own loop, which the compiler vectorises."""
    body, prologue = _body(signature, first, affine)
    unit = [" " * 16 + line for line in body]
    strided = [line.replace("x[i]", "x[i * x3]").replace("th_row[p]", "th_row[theta_channel ? 0 : p]") for line in unit]
    # θ per channel (theta_channel): one value for the channel's whole row, so the thresholds it
    # implies are computed once per row, not per element (a stream and ~2n ops less per element)
    hoisted = [line.replace("th_row[p]", "th_c") for line in unit]
    loop = "for (int64_t i = 0; i < inner; ++i) {"
    return [
        f"void {'snn_first' if first else 'snn_step'}(int64_t rows, int64_t channels, int64_t outer, int64_t inner,",
        "              const float *restrict x_all, int64_t x0, int64_t x1, int64_t x2, int64_t x3,",
        "              const float *restrict b, int64_t b_stride,",
        *(["              const float *restrict v0, int64_t v0_stride,"] if first else []),
        "              float *restrict v_all, float *restrict e_in_all, float *restrict e_out_all,",
        "              const float *restrict theta, int64_t theta_stride, int64_t theta_channel, float t,",
        "              float *restrict s_all, int64_t *restrict counts, int64_t *restrict hits,",
        "              const float *restrict alpha, const float *restrict beta,",
        "              const float *restrict skip_all, const float *restrict alpha2, const float *restrict beta2) {",
        *("    " + line for line in prologue),
        "    int64_t events = 0, units = 0;",
        "    const int64_t positions = outer * inner, size = channels * positions;",
        "    for (int64_t r = 0; r < rows; ++r)",
        "    for (int64_t c = 0; c < channels; ++c)",
        "        for (int64_t o = 0; o < outer; ++o) {",
        "            const int64_t within = c * positions + o * inner, offset = r * size + within;",
        "            const float *restrict x = x_all + r * x0 + c * x1 + o * x2;",
        "            float *restrict v = v_all + offset;",
        "            float *restrict e_in = e_in_all ? e_in_all + offset : 0;",
        "            float *restrict e_out = e_out_all ? e_out_all + offset : 0;",
        "            float *restrict s_out = s_all + offset;",
        "            const float *restrict b_row = b ? b + r * b_stride + within : 0;",
        *(["            const float *restrict v0_row = v0 + r * v0_stride + within;"] if first else []),
        "            const float *restrict th_row = theta_channel ? theta + c : theta + r * theta_stride + within;",
        *(["            const float alpha_c = alpha[c], beta_c = beta[c];"] if affine else []),
        *(["            const float *restrict skip = skip_all + offset;"] if "+" in affine else []),
        *(["            const float alpha2_c = alpha2[c], beta2_c = beta2[c];"] if affine.endswith(("+fma", "+mul_add")) else []),
        "            int64_t *restrict hits_row = hits ? hits + o * inner : 0;",
        "            if (x3 == 1 && theta_channel) {",
        "                const float th_c = th_row[0];",
        f"                {loop}",
        "                const int64_t p = i;",
        *hoisted,
        f"            }} }} else if (x3 == 1) {{ {loop}",
        "                const int64_t p = i;",
        *unit,
        f"            }} }} else {{ {loop}",
        "                const int64_t p = i;",
        *strided,
        "            } }",
        "        }",
        "    if (counts) { counts[0] = events; counts[1] = units; }",
        "}",
    ]


def source(signature: StepSignature, affine: str = "") -> str:
    """The C source of the steps of ``signature``: ``snn_step`` and ``snn_first`` (:func:`_function`)."""
    return "\n".join([
        f"/* snnbench native neuron step: {signature.tag()} (generated by methods/snn/native_steps.py) */",
        "#include <math.h>",
        "#include <stdint.h>",
        *_function(signature, first=False, affine=affine),
        *_function(signature, first=True, affine=affine),
        "",
    ])
