"""Plain-loop references written from the formulas: numpy only, float64, no convcli imports.

They are slow and obviously right; every engine operation is checked against one of these.
"""

import numpy as np

#: Every border mode the references know.
PAD_MODES = ("zeros", "reflect", "replicate", "circular", "symmetric")


def source_index(index, size, mode):
    """The input index a padded position reads from, or None where it reads a zero.

    zeros: outside is 0; replicate: clamp to the edge; circular: wrap around;
    reflect: mirror without repeating the edge (``c b | a b c d | c b``);
    symmetric: mirror with the edge repeated (``b a | a b c d | d c``), folding again at the
    far edge for pads wider than the image.
    """
    if 0 <= index < size:
        return index
    if mode == "zeros":
        return None
    if mode == "symmetric":
        while (
            not 0 <= index < size
        ):  # mirror across the edge that was crossed: -1 -> 0, size -> size - 1
            index = -1 - index if index < 0 else 2 * size - 1 - index
        return index
    if mode == "replicate":
        return min(max(index, 0), size - 1)
    if mode == "circular":
        return index % size
    if mode == "reflect":
        period = 2 * (size - 1)
        folded = index % period if period else 0
        return folded if folded < size else period - folded
    raise ValueError(mode)


def tf_same_pads(size, kernel, stride=1, dilation=1):
    """TensorFlow's SAME padding (before, after), from the tf.nn 'Notes on padding'."""
    reach = dilation * (kernel - 1) + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + reach - size, 0)
    return total // 2, total - total // 2


def explicit_pads(padding, in_hw, k_hw, stride=(1, 1), dilation=(1, 1)):
    """(top, bottom, left, right) for 'valid', 'same' (TensorFlow's split), 'full' or explicit
    pads."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        return tf_same_pads(in_hw[0], k_hw[0], stride[0], dilation[0]) + tf_same_pads(
            in_hw[1], k_hw[1], stride[1], dilation[1]
        )
    if padding == "full":
        return (dilation[0] * (k_hw[0] - 1),) * 2 + (dilation[1] * (k_hw[1] - 1),) * 2
    return padding


def conv2d(
    x, w, bias=None, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1, mode="zeros"
):
    """PyTorch conv2d on one image: x (C, H, W), w (C_out, C/groups, kh, kw), explicit pads.

    y[o, i, j] = b[o]
        + sum_{c, m, n} x_pad[g*C/groups + c, i*sh + m*dh, j*sw + n*dw] * w[o, c, m, n]
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    channels, height, width = x.shape
    c_out, c_per_group, kh, kw = w.shape
    top, bottom, left, right = pads
    (sh, sw), (dh, dw) = stride, dilation
    h_out = (height + top + bottom - (dh * (kh - 1) + 1)) // sh + 1
    w_out = (width + left + right - (dw * (kw - 1) + 1)) // sw + 1
    out = np.zeros((c_out, h_out, w_out))
    for o in range(c_out):
        group = o // (c_out // groups)
        for i in range(h_out):
            for j in range(w_out):
                total = 0.0
                for c in range(c_per_group):
                    for m in range(kh):
                        for n in range(kw):
                            r = source_index(i * sh + m * dh - top, height, mode)
                            q = source_index(j * sw + n * dw - left, width, mode)
                            if r is not None and q is not None:
                                total += x[group * c_per_group + c, r, q] * w[o, c, m, n]
                out[o, i, j] = total + (0.0 if bias is None else bias[o])
    return out


def pool_size(size, kernel, stride, dilation=1, before=0, after=0, ceil_mode=False):
    """PyTorch's pooling output length; in ceil mode a window may not start in the after-padding."""
    span = size + before + after - (dilation * (kernel - 1) + 1)
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    return out - 1 if (out - 1) * stride >= size + before else out


def _first_tap(start, dilation):
    """The first tap of a dilated window at or after index 0 (PyTorch's initial argmax)."""
    while start < 0:
        start += dilation
    return start


def max_pool2d(x, size, stride, pads=(0, 0, 0, 0), dilation=(1, 1), ceil_mode=False):
    """PyTorch max_pool2d on x (C, H, W): (values, flat indices r*W + q) by explicit window loops.

    Pad cells are -inf (never win); a cell wins if ``v > best or isnan(v)`` in row-major order.
    """
    x = np.asarray(x, dtype=np.float64)
    channels, height, width = x.shape
    top, bottom, left, right = pads
    (kh, kw), (sh, sw), (dh, dw) = size, stride, dilation
    h_out = pool_size(height, kh, sh, dh, top, bottom, ceil_mode)
    w_out = pool_size(width, kw, sw, dw, left, right, ceil_mode)
    values = np.zeros((channels, h_out, w_out))
    indices = np.zeros((channels, h_out, w_out), dtype=np.int64)
    for c in range(channels):
        for i in range(h_out):
            for j in range(w_out):
                best = -np.inf
                where = _first_tap(i * sh - top, dh) * width + _first_tap(j * sw - left, dw)
                for m in range(kh):
                    for n in range(kw):
                        r, q = i * sh - top + m * dh, j * sw - left + n * dw
                        inside = 0 <= r < height and 0 <= q < width
                        if inside and (x[c, r, q] > best or np.isnan(x[c, r, q])):
                            best, where = x[c, r, q], r * width + q
                values[c, i, j], indices[c, i, j] = best, where
    return values, indices


def avg_pool2d(x, size, stride, pads=(0, 0, 0, 0), ceil_mode=False, count_include_pad=True):
    """PyTorch avg_pool2d on x (C, H, W) by explicit window loops.

    Divisor: the window's cells inside the padded extent (count_include_pad) or inside the
    input; cells beyond the padding (ceil-mode overhang) are never counted.
    """
    x = np.asarray(x, dtype=np.float64)
    channels, height, width = x.shape
    top, bottom, left, right = pads
    (kh, kw), (sh, sw) = size, stride
    h_out = pool_size(height, kh, sh, 1, top, bottom, ceil_mode)
    w_out = pool_size(width, kw, sw, 1, left, right, ceil_mode)
    out = np.zeros((channels, h_out, w_out))
    for c in range(channels):
        for i in range(h_out):
            for j in range(w_out):
                total, padded_cells, real_cells = 0.0, 0, 0
                for m in range(kh):
                    for n in range(kw):
                        r, q = i * sh - top + m, j * sw - left + n
                        if r >= height + bottom or q >= width + right:
                            continue
                        padded_cells += 1
                        if 0 <= r < height and 0 <= q < width:
                            total += x[c, r, q]
                            real_cells += 1
                out[c, i, j] = total / (padded_cells if count_include_pad else real_cells)
    return out


def max_unpool2d(x, indices, out_hw):
    """PyTorch max_unpool2d: out[c, idx // W, idx % W] = x[c, i, j]; zeros elsewhere."""
    channels, height, width = np.shape(x)
    out = np.zeros((channels,) + tuple(out_hw))
    for c in range(channels):
        for i in range(height):
            for j in range(width):
                index = indices[c, i, j]
                out[c, index // out_hw[1], index % out_hw[1]] = x[c, i, j]
    return out


def conv_transpose2d(
    x, w, bias=None, stride=(1, 1), padding=(0, 0), output_padding=(0, 0), dilation=(1, 1), groups=1
):
    """PyTorch conv_transpose2d on x (C_in, H, W), w (C_in, C_out/groups, kh, kw): scatter-add,
    then crop.

    Input (i, j) through tap (m, n) adds x*w at (i*sh + m*dh, j*sw + n*dw) of the full output.
    Explicit (ph, pw) crops p from the start and keeps (H-1)*s - 2p + d*(k-1) + op + 1 cells;
    "same" (Keras Conv2DTranspose) keeps H*s cells from TF SAME's before-pad of an H*s input.
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    channels, height, width = x.shape
    _, c_per_group, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    full_hw = ((height - 1) * sh + dh * (kh - 1) + 1, (width - 1) * sw + dw * (kw - 1) + 1)
    full = np.zeros((c_per_group * groups,) + full_hw)
    for c in range(channels):
        group = c // (channels // groups)
        for o in range(c_per_group):
            for i in range(height):
                for j in range(width):
                    for m in range(kh):
                        for n in range(kw):
                            product = x[c, i, j] * w[c, o, m, n]
                            full[group * c_per_group + o, i * sh + m * dh, j * sw + n * dw] += (
                                product
                            )
    if padding == "same":
        start = (tf_same_pads(height * sh, kh, sh, dh)[0], tf_same_pads(width * sw, kw, sw, dw)[0])
        out_hw = (height * sh, width * sw)
    else:
        start = padding
        out_hw = tuple(n - 2 * p + op for n, p, op in zip(full_hw, padding, output_padding))
    out = np.zeros((full.shape[0],) + out_hw)
    for y in range(out_hw[0]):
        for z in range(out_hw[1]):
            if y + start[0] < full_hw[0] and z + start[1] < full_hw[1]:
                out[:, y, z] = full[:, y + start[0], z + start[1]]
    return out + (0.0 if bias is None else np.asarray(bias, dtype=np.float64)[:, None, None])
