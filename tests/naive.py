"""Plain-loop references written from the formulas: numpy only, float64, no convcli imports.

They are slow and obviously right; every engine operation is checked against one of these.
"""

import numpy as np


def source_index(index, size, mode):
    """The input index a padded position reads from, or None where it reads a zero.

    zeros: outside is 0; replicate: clamp to the edge; circular: wrap around;
    reflect: mirror without repeating the edge (``c b | a b c d | c b``).
    """
    if 0 <= index < size:
        return index
    if mode == "zeros":
        return None
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


def conv2d(x, w, bias=None, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1, mode="zeros"):
    """PyTorch conv2d on one image: x (C, H, W), w (C_out, C/groups, kh, kw), explicit pads.

    y[o, i, j] = b[o] + sum_{c, m, n} x_pad[g*C/groups + c, i*sh + m*dh, j*sw + n*dw] * w[o, c, m, n]
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
