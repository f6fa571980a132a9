"""Candidate operations of the CRMEF search spaces and the registry that builds them.

The whole table, DARTS style (every constructor takes ``C_in, C_out, stride``)::

    conv_{1,3,5,7}        k x k convolution                     ("k-C")
    dilconv_{3,5,7}       k x k convolution, dilation 2         ("k-DC")
    resconv_{1,3,5,7}     conv + identity skip                  ("RConv")
    resdilconv_{3,5,7}    dilated conv + identity skip          ("RDConv")
    skip                  identity (1x1 projection if shapes change)
    deform_{3,5,7}        modulated deformable conv              ("k-DeC")

Every weighted op has a second, ``style="authors"`` variant (:mod:`nas.ops.authors`) that
computes what the CRMEF authors' released code computes for that name.
"""

from __future__ import annotations

from nas.ops.authors import AuthorsConv, AuthorsDeform, AuthorsResBlock
from nas.ops.conv import ConvOp, ResConvOp, SkipOp
from nas.ops.deform import DeformConvOp
from nas.ops.deform_conv import deform_conv2d
from nas.ops.registry import (
    STYLES,
    OpFactory,
    OpSpec,
    create_op,
    get_op_spec,
    list_ops,
    register_op,
)
from nas.ops.unit import Unit, call_slot

# family: (kernels, dilation, lean class, authors' class); every class takes
# (C_in, C_out, k, stride[, dilation]) and deformable ops also an offset feature
_FAMILIES = {
    "conv": ((1, 3, 5, 7), 1, ConvOp, AuthorsConv),
    "resconv": ((1, 3, 5, 7), 1, ResConvOp, AuthorsResBlock),
    "dilconv": ((3, 5, 7), 2, ConvOp, AuthorsConv),
    "resdilconv": ((3, 5, 7), 2, ResConvOp, AuthorsResBlock),
    "deform": ((3, 5, 7), 1, DeformConvOp, AuthorsDeform),
}


def _factory(cls: type, k: int, dilation: int) -> OpFactory:
    extra = {"dilation": dilation} if dilation != 1 else {}
    return lambda ci, co, s=1: cls(ci, co, k, s, **extra)


for _family, (_kernels, _dilation, _lean, _authors) in _FAMILIES.items():
    for _k in _kernels:
        register_op(
            f"{_family}_{_k}",
            _factory(_lean, _k, _dilation),
            family=_family,
            kernel=_k,
            dilation=_dilation,
            takes_offset_feat=_family == "deform",
            authors=_factory(_authors, _k, _dilation),
        )
register_op("skip", lambda ci, co, s=1: SkipOp(ci, co, s), family="skip")

__all__ = [
    "STYLES",
    "AuthorsConv",
    "AuthorsDeform",
    "AuthorsResBlock",
    "ConvOp",
    "DeformConvOp",
    "OpSpec",
    "ResConvOp",
    "SkipOp",
    "Unit",
    "call_slot",
    "create_op",
    "deform_conv2d",
    "get_op_spec",
    "list_ops",
    "register_op",
]
