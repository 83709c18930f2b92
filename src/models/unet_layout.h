// Internal: the block structure a UNetConfig implies, computed in one place
// (the channel bookkeeping of UNet2DConditionModel.__init__ and its blocks) and
// shared by the tensor list, the weight binding and the LDM key table.
#pragma once
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "models/unet.h"

namespace diffuse::unet_detail {

struct BlockLayout {
  std::string prefix;                       // "down_blocks.0.", "mid_block.", "up_blocks.2."
  std::vector<std::pair<int, int>> resnets;  // (in, out) channels of each ResnetBlock2D
  int attentions = 0;                       // Transformer2DModels (0 for DownBlock2D / UpBlock2D)
  int channels = 0;                         // width of the block's output and transformers
  int heads = 1;
  std::vector<int> transformer_layers;      // BasicTransformerBlocks of each attention
  int cross_dim = 0;
  bool downsample = false;  // Downsample2D after the last resnet (down blocks)
  bool upsample = false;    // Upsample2D after the last resnet (up blocks)
};

struct Layout {
  std::vector<BlockLayout> down, up;
  BlockLayout mid;
};

inline Layout layout_of(const UNetConfig& c) {
  c.validate();
  const int n = c.num_blocks();
  Layout l;
  // Down blocks (unet_2d_condition.py: get_down_block loop).
  int out = c.block_out_channels[0];
  for (int i = 0; i < n; ++i) {
    const int in = out;
    out = c.block_out_channels[i];
    BlockLayout b;
    b.prefix = "down_blocks." + std::to_string(i) + ".";
    for (int j = 0; j < c.layers_per_block[i]; ++j) b.resnets.push_back({j == 0 ? in : out, out});
    b.attentions = c.down_block_types[i] == "CrossAttnDownBlock2D" ? c.layers_per_block[i] : 0;
    b.channels = out;
    b.heads = c.heads(i);
    for (int j = 0; j < b.attentions; ++j) b.transformer_layers.push_back(c.down_transformer_layers(i, j));
    b.cross_dim = c.cross_attention_dim[i];
    b.downsample = i + 1 < n;
    l.down.push_back(b);
  }
  // Mid block: UNetMidBlock2DCrossAttn (num_layers=1) is resnet, attention,
  // resnet; UNetMidBlock2D as UNet2DConditionModel builds it (num_layers=0,
  // add_attention=False) one resnet; "" none.
  const int top = c.block_out_channels[n - 1];
  l.mid.prefix = "mid_block.";
  l.mid.channels = top;
  l.mid.heads = c.heads(n - 1);
  l.mid.cross_dim = c.cross_attention_dim[n - 1];
  if (c.mid_block_type == "UNetMidBlock2DCrossAttn") {
    l.mid.resnets = {{top, top}, {top, top}};
    l.mid.attentions = 1;
    l.mid.transformer_layers = {c.down_transformer_layers(n - 1, 0)};
  } else if (c.mid_block_type == "UNetMidBlock2D") {
    l.mid.resnets = {{top, top}};
  }
  // Up blocks: per-block lists are reversed; each has layers_per_block + 1
  // resnets whose inputs concatenate a skip connection (CrossAttnUpBlock2D).
  out = c.block_out_channels[n - 1];
  for (int i = 0; i < n; ++i) {
    const int r = n - 1 - i;  // index into the down-ordered lists
    const int prev_out = out;
    out = c.block_out_channels[r];
    const int in = c.block_out_channels[std::max(r - 1, 0)];
    const int layers = c.layers_per_block[r] + 1;
    BlockLayout b;
    b.prefix = "up_blocks." + std::to_string(i) + ".";
    for (int j = 0; j < layers; ++j) {
      const int skip = j == layers - 1 ? in : out;
      b.resnets.push_back({(j == 0 ? prev_out : out) + skip, out});
    }
    b.attentions = c.up_block_types[i] == "CrossAttnUpBlock2D" ? layers : 0;
    b.channels = out;
    b.heads = c.heads(r);
    for (int j = 0; j < b.attentions; ++j) b.transformer_layers.push_back(c.up_transformer_layers(i, j));
    b.cross_dim = c.cross_attention_dim[r];
    b.upsample = i + 1 < n;
    l.up.push_back(b);
  }
  return l;
}

}  // namespace diffuse::unet_detail
