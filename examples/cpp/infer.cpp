// infer ARTIFACT INPUTS.pt OUTPUTS.pt [--device cpu|cuda[:N]] [--repeat N] [--load-library PATH]...
//
// Runs a lightning-deploy artifact without Python: a TorchScript file (STEM.torchscript.pt,
// torch::jit::load) or an AOTInductor package (STEM.aoti.pt2, AOTIModelPackageLoader). The
// inputs are the flat tensors of the manifest's inputs.names, saved by torch.save([t0, t1, ...])
// (lightning_deploy.serving.flat_files.save_inputs writes them from a structured sample); the outputs
// are written as a tuple of tensors in the order of outputs.names, which torch.load reads with
// its default weights_only=True (lightning_deploy.serving.flat_files.load_outputs rebuilds the structure).
// Any error prints one line and exits 1.

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/cuda.h>
#include <torch/script.h>

namespace {

struct Options {
  std::string artifact, inputs, outputs, device = "cpu";
  int repeat = 0;
  std::vector<std::string> libraries;
};

[[noreturn]] void fail(const std::string& message) { throw std::runtime_error(message); }

std::string first_line(const std::string& text) {
  std::string line = text.substr(0, text.find('\n'));
  return line.empty() ? text : line;
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

Options parse(int argc, char** argv) {
  Options options;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) fail(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--device") options.device = value();
    else if (arg == "--repeat") options.repeat = std::stoi(value());
    else if (arg == "--load-library") options.libraries.push_back(value());
    else if (arg.rfind("--", 0) == 0) fail("unknown option " + arg);
    else positional.push_back(arg);
  }
  if (positional.size() != 3) {
    fail("usage: infer ARTIFACT INPUTS.pt OUTPUTS.pt [--device D] [--repeat N] [--load-library PATH]...");
  }
  options.artifact = positional[0];
  options.inputs = positional[1];
  options.outputs = positional[2];
  return options;
}

// Libraries opened with dlopen (an AOTInductor package's model, torchvision's op library) name
// libtorch.so as a dependency and do not search this program's RUNPATH: load it from the wheel
// first, so that the dynamic linker finds it already loaded.
void load_libtorch() {
  if (dlopen(TORCH_LIB_DIR "/libtorch.so", RTLD_NOW | RTLD_GLOBAL) == nullptr) {
    fail("cannot load libtorch.so (" + std::string(dlerror()) + ")");
  }
}

std::vector<char> read_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) fail(path + ": cannot open it");
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

std::vector<at::Tensor> read_inputs(const std::string& path, const c10::Device& device) {
  c10::IValue value = torch::jit::pickle_load(read_file(path));
  std::vector<at::Tensor> tensors;
  if (value.isTensor()) {
    tensors.push_back(value.toTensor());
  } else if (value.isList()) {
    for (const c10::IValue& item : value.toListRef()) tensors.push_back(item.toTensor());
  } else if (value.isTuple()) {
    for (const c10::IValue& item : value.toTupleRef().elements()) tensors.push_back(item.toTensor());
  } else {
    fail(path + ": expected the list of input tensors written by torch.save([t0, t1, ...])");
  }
  for (at::Tensor& tensor : tensors) tensor = tensor.to(device);
  return tensors;
}

void flatten(const c10::IValue& value, std::vector<at::Tensor>& out) {
  if (value.isTensor()) out.push_back(value.toTensor());
  else if (value.isTuple()) for (const auto& item : value.toTupleRef().elements()) flatten(item, out);
  else if (value.isList()) for (const auto& item : value.toListRef()) flatten(item, out);
  else fail("the model returned something other than tensors (a native-I/O TorchScript artifact?)");
}

void write_outputs(const std::string& path, const std::vector<at::Tensor>& outputs) {
  std::vector<c10::IValue> items;
  for (const at::Tensor& tensor : outputs) items.emplace_back(tensor.cpu());
  std::vector<char> bytes = torch::jit::pickle_save(c10::ivalue::Tuple::create(std::move(items)));
  std::ofstream file(path, std::ios::binary);
  file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!file) fail(path + ": cannot write it");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Options options = parse(argc, argv);
    if (!options.libraries.empty()) load_libtorch();  // op libraries (torchvision) need it too
    for (const std::string& library : options.libraries) {
      if (dlopen(library.c_str(), RTLD_NOW | RTLD_GLOBAL) == nullptr) fail("--load-library: " + std::string(dlerror()));
    }
    c10::Device device(options.device);
    if (device.is_cuda()) {
      // infer links libtorch_cpu only (see CMakeLists.txt); CUDA kernels come with libtorch_cuda.
      if (dlopen(TORCH_LIB_DIR "/libtorch_cuda.so", RTLD_NOW | RTLD_GLOBAL) == nullptr) {
        fail("--device " + options.device + ": cannot load libtorch_cuda.so (" + std::string(dlerror()) + ")");
      }
      if (!torch::cuda::is_available()) fail("--device " + options.device + ": no CUDA device here");
    }
    std::vector<at::Tensor> inputs = read_inputs(options.inputs, device);
    c10::InferenceMode inference;

    std::function<std::vector<at::Tensor>()> run;
    std::unique_ptr<torch::jit::Module> scripted;
    std::unique_ptr<torch::inductor::AOTIModelPackageLoader> compiled;
    if (ends_with(options.artifact, ".aoti.pt2")) {
      load_libtorch();  // the package's compiled model needs it
      compiled = std::make_unique<torch::inductor::AOTIModelPackageLoader>(
          options.artifact, "model", false, 1, device.is_cuda() ? device.index() : -1);
      run = [&] { return compiled->run(inputs); };
    } else if (ends_with(options.artifact, ".torchscript.pt")) {
      scripted = std::make_unique<torch::jit::Module>(torch::jit::load(options.artifact, device));
      scripted->eval();
      std::vector<c10::IValue> arguments(inputs.begin(), inputs.end());
      run = [&, arguments] {
        std::vector<at::Tensor> out;
        flatten(scripted->forward(arguments), out);
        return out;
      };
    } else {
      fail(options.artifact + ": expected a .torchscript.pt or .aoti.pt2 artifact");
    }

    std::vector<at::Tensor> outputs = run();
    if (options.repeat > 0) {
      std::vector<double> milliseconds;
      for (int i = 0; i < options.repeat; ++i) {
        auto start = std::chrono::steady_clock::now();
        run();
        if (device.is_cuda()) torch::cuda::synchronize();
        milliseconds.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
      }
      std::nth_element(milliseconds.begin(), milliseconds.begin() + milliseconds.size() / 2, milliseconds.end());
      std::cout << "median_ms " << milliseconds[milliseconds.size() / 2] << " over " << options.repeat << " runs\n";
    }
    write_outputs(options.outputs, outputs);
    return 0;
  } catch (const c10::Error& error) {
    std::cerr << "infer: error: " << first_line(error.what_without_backtrace()) << "\n";
  } catch (const std::exception& error) {
    std::cerr << "infer: error: " << first_line(error.what()) << "\n";
  }
  return 1;
}
