// convmlp_ov: run an ONNX graph or OpenVINO IR written by `convmlp-deploy export` on OpenVINO's CPU plugin.
//
//   convmlp_ov MODEL N C H W [input.bin] [--output out.bin] [--precision f32|bf16] [--threads T]
//              [--parallel K] [--repeat R]
//
// input.bin: N*C*H*W float32 values, NCHW, already normalised with the model's mean/std (printed on
// stderr, read from its metadata); without it a deterministic pattern. --output writes the raw float32
// logits. stdout: the top-5 classes of each sample. --parallel K runs K threads on one model, each on its
// own batch of input.bin (which then holds K batches), each --repeat R times; every repeat must give
// the same logits; with R > 1 the latency of thread 0 is printed on stderr (the first run, which compiles for the
// shape, apart). Errors: one line on stderr, exit 1 (run time) or 2 (usage).

#include "convmlp.h"
#include "openvino_model.h"

int main(int argc, char** argv) {
  const std::string usage =
      "convmlp_ov MODEL N C H W [input.bin] [--output out.bin] [--precision f32|bf16] [--threads T] "
      "[--parallel K] [--repeat R]";
  return convmlp::sample_main(argc, argv, {"--precision", "--threads"}, usage, [](const convmlp::Options& o) {
    return std::make_unique<convmlp::OpenVINOModel>(o.model, o.precision, o.threads);
  });
}
