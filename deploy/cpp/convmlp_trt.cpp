// convmlp_trt: run a TensorRT plan built by `convmlp-deploy build` on one dynamic-shape batch.
//
//   convmlp_trt [--allow-host-code] model.engine N C H W [input.bin] [--output out.bin] [--parallel K] [--repeat R]
//
// input.bin (optional): N*C*H*W float32 values, NCHW, already normalised with the model's mean/std (printed
// on stderr, read from the sidecar's metadata). Without it the input is a deterministic pattern. stdout:
// the top-5 classes of each sample; --output writes the raw float32 logits. Errors: one line on stderr,
// exit 1 (run time) or 2 (usage). The backend is tensorrt_model.h; what both samples share is convmlp.h.

#include "convmlp.h"
#include "tensorrt_model.h"

int main(int argc, char** argv) {
  const std::string usage =
      "convmlp_trt [--allow-host-code] model.engine N C H W [input.bin] [--output out.bin] [--parallel K] "
      "[--repeat R]";
  return convmlp::sample_main(argc, argv, {"--allow-host-code"}, usage, [](const convmlp::Options& o) {
    return std::make_unique<convmlp::TensorRTModel>(o.model, o.allow_host_code);
  });
}
