// AUTOMATIC1111's extra-network tags in a prompt (modules/extra_networks.py,
// extensions-builtin/Lora/extra_networks_lora.py):
//
//   <lora:name>              both weights 1
//   <lora:name:w>            text encoder and UNet weight w
//   <lora:name:te:unet>      the text encoders' weight first, then the UNet's (A1111's order)
//   <lora:name:w:unet=0.5>   named arguments te=, unet= override the positional ones;
//                            dyn= (DyLoRA) and other named arguments are kept but not applied
//   <lyco:name:...>          the same (A1111's alias of "lora")
//
// A tag is A1111's regular expression <(\w+):([^>]+)>: a word, a colon, then
// everything up to the next '>', split at ':'. Every such tag is removed from
// the prompt (replaced by nothing, as A1111 does); tags of other networks
// (<hypernet:...>, unknown ones) are removed and reported, not applied.
// A1111 reads the tags of the positive prompt only: a <lora:...> in the
// negative prompt stays there as plain text (find_extra_network_tags finds
// them for a warning).
#pragma once
#include <string>
#include <vector>

namespace diffuse {

// One <word:args> tag as written.
struct ExtraNetworkTag {
  std::string text;               // "<lora:name:0.8>"
  std::string network;            // "lora"
  std::vector<std::string> args;  // {"name", "0.8"}: the text after the first ':' split at ':'
  size_t begin = 0, end = 0;      // byte range of `text` in the prompt
};

// A LoRA / LyCORIS tag with its weights.
struct LoraTag {
  std::string text;     // the tag as written, for messages
  std::string name;     // file stem, alias, sub/folder/name or path (trimmed of spaces)
  float te_weight = 1.0f;
  float unet_weight = 1.0f;
  // Arguments that were read but are not applied: "dyn=8", "lbw=...".
  std::vector<std::string> ignored;
};

struct PromptNetworks {
  std::string prompt;                 // every tag removed
  std::vector<LoraTag> loras;         // <lora:...> and <lyco:...>, in prompt order
  std::vector<std::string> skipped;   // other tags as written (<hypernet:x:1>): removed, not applied
};

// Every <word:args> tag of `prompt`, in order.
std::vector<ExtraNetworkTag> find_extra_network_tags(const std::string& prompt);

// The LoRA of one tag's arguments (args[0] is the name). Throws
// Error(kInvalidArgument) naming `text` for a missing name, or for a weight
// that is not a finite number ("<lora:x:abc>: the text-encoder weight 'abc'
// is not a number").
LoraTag parse_lora_args(const std::vector<std::string>& args, const std::string& text);

// "NAME_OR_PATH[:w[:unet_w]]" with the same rules as a tag's inside
// (`diffuse generate --lora`). When the whole text names an existing file
// (a path containing ':'), that is the name and both weights are 1.
LoraTag parse_lora_spec(const std::string& spec);

// The prompt's LoRA tags and the prompt without any tag. Throws as
// parse_lora_args for a bad <lora:...> tag.
PromptNetworks extract_extra_networks(const std::string& prompt);

// The prompt without its tags (no checks): what the text encoder should see.
std::string strip_extra_networks(const std::string& prompt);

// An image's A1111 infotext whose prompt is `used_prompt` (the prompt the
// text encoder saw, tags removed), with `written_prompt` (as the user wrote
// it, tags included) in its place: A1111 keeps the tags in the infotext's
// prompt. Returned unchanged when it does not start with `used_prompt`.
std::string infotext_with_prompt(const std::string& infotext, const std::string& used_prompt,
                                 const std::string& written_prompt);

// A tag's weight as the page and messages write it: "0.8", "1", "-0.25".
std::string format_lora_weight(float w);

}  // namespace diffuse
