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
from nas.ops.registry import STYLES, OpSpec, create_op, get_op_spec, list_ops, register_op
from nas.ops.unit import Unit, call_slot

for _k in (1, 3, 5, 7):
    register_op(
        f"conv_{_k}",
        lambda ci, co, s=1, k=_k: ConvOp(ci, co, k, s),
        family="conv",
        kernel=_k,
        authors=lambda ci, co, s=1, k=_k: AuthorsConv(ci, co, k, s),
    )
    register_op(
        f"resconv_{_k}",
        lambda ci, co, s=1, k=_k: ResConvOp(ci, co, k, s),
        family="resconv",
        kernel=_k,
        authors=lambda ci, co, s=1, k=_k: AuthorsResBlock(ci, co, k, s),
    )
for _k in (3, 5, 7):
    register_op(
        f"dilconv_{_k}",
        lambda ci, co, s=1, k=_k: ConvOp(ci, co, k, s, dilation=2),
        family="dilconv",
        kernel=_k,
        dilation=2,
        authors=lambda ci, co, s=1, k=_k: AuthorsConv(ci, co, k, s, dilation=2),
    )
    register_op(
        f"resdilconv_{_k}",
        lambda ci, co, s=1, k=_k: ResConvOp(ci, co, k, s, dilation=2),
        family="resdilconv",
        kernel=_k,
        dilation=2,
        authors=lambda ci, co, s=1, k=_k: AuthorsResBlock(ci, co, k, s, dilation=2),
    )
    register_op(
        f"deform_{_k}",
        lambda ci, co, s=1, k=_k: DeformConvOp(ci, co, k, s),
        family="deform",
        kernel=_k,
        takes_offset_feat=True,
        authors=lambda ci, co, s=1, k=_k: AuthorsDeform(ci, co, k, s),
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
