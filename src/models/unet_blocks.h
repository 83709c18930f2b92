// Internal: the UNet's block-level pieces that another model built from the
// UNet's encoder half reuses (the ControlNet, models/controlnet.cpp): the
// tensor list and weight binding of one block, and the forward pass of a
// ResnetBlock2D, a Transformer2DModel and a TimestepEmbedding. Implemented in
// unet.cpp beside the UNet that uses them, so both run the same code.
#pragma once
#include "models/unet.h"
#include "models/unet_layout.h"
#include "models/weights.h"

namespace diffuse::unet_detail {

// Appends the (diffusers name, shape) of every tensor of block `b`.
void declare_unet_block(WeightSpecs& out, const BlockLayout& b, const UNetConfig& c);
// The block's weights from a placed table (names as declare_unet_block lists them).
UNet::Block bind_unet_block(const WeightTable& w, const BlockLayout& b);
// ResnetBlock2D; temb_act is SiLU(time embedding) [B, T].
Tensor unet_resnet(const Tensor& x, const Tensor& temb_act, const UNet::Resnet& r, int groups, float eps);
// Transformer2DModel (self-attention, cross-attention on ctx [B, L, D], GEGLU) with its residual.
Tensor unet_transformer(const Tensor& x, const Tensor& ctx, const UNet::Transformer& t, int groups);
// TimestepEmbedding: linear_1, SiLU, linear_2.
Tensor unet_mlp_embedding(const Tensor& x, const Tensor& w1, const Tensor& b1, const Tensor& w2, const Tensor& b2);

}  // namespace diffuse::unet_detail
