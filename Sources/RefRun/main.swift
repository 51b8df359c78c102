// refrun: runs a model with bnfold's reference runtime (used by
// Tests/CrossCheck/runtime_oracle.py to compare it with onnxruntime, and by
// `make bench` to time it).
//
//   refrun IN.onnx OUT.onnx
//   refrun --time N [--float64] IN.onnx
//   refrun --profile N [--float64] IN.onnx
//
// First form: graph inputs are taken from initializers of the same name (the
// caller stores the inputs there). OUT.onnx is a model whose graph holds one
// initializer per graph output of IN, named like it.
//
// Second form (timing): every graph input that is not an initializer gets
// fixed seeded standard-normal values (float, float16, bfloat16 or double,
// with the declared shape; symbolic or unknown dimensions are 1); the model
// is run once to warm up, then N times, and one JSON line is printed:
// {"runs": N, "median_ms": …, "min_ms": …, "max_ms": …, "load_ms": …,
//  "threads": …, "blas_threads": …} (threads: the runtime's workers,
// `Parallelism.threads`; blas_threads: OpenBLAS's own thread count, 1 once
// the runtime has configured it, -1 if unknown).
//
// With --float64 the timed runs compute in float64
// (`Interpreter.computingInFloat64()`, the reference run of `bnfold check`).
//
// Third form: like --time, then a table on stderr of the wall time per
// operator type (summed over the N runs, divided by N), largest first.
//
// Exit 0 on success, 1 when the runtime refuses or fails (one line on
// stderr), 2 on bad usage or unreadable input.

import ONNXFile
import ONNXGraph
import ReferenceRuntime

import Foundation

// OpenBLAS's own threads would spin beside the runtime's workers (see Parallelism).
Parallelism.configureBLAS()

func fail(_ message: String, code: Int32) -> Never {
    // Escaped: the message may quote names from the model (see String.escapedForTerminal).
    FileHandle.standardError.write(Data("refrun: \(message.escapedForTerminal)\n".utf8))
    exit(code)
}

let usage = "usage: refrun IN.onnx OUT.onnx | refrun --time N [--float64] IN.onnx | refrun --profile N [--float64] IN.onnx"
let arguments = CommandLine.arguments

/// Monotonic time in milliseconds.
func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) * 1e3 + Double(ts.tv_nsec) / 1e6
}

/// OpenBLAS's thread count (the library is linked in through ReferenceRuntime),
/// looked up at run time so RefRun needs no C module of its own; -1 if absent.
func openBLASThreads() -> Int {
    guard let handle = dlopen(nil, RTLD_NOW), let symbol = dlsym(handle, "openblas_get_num_threads") else { return -1 }
    typealias GetThreads = @convention(c) () -> Int32
    return Int(unsafeBitCast(symbol, to: GetThreads.self)())
}

/// Seeded standard-normal values (splitmix64 + Box–Muller): the same input on every run and machine.
func normals(count: Int, seed: UInt64) -> [Double] {
    var state = seed
    func next() -> Double {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return (Double(z >> 11) + 0.5) / 9_007_199_254_740_992.0  // (0, 1)
    }
    var values: [Double] = []
    values.reserveCapacity(count)
    while values.count < count {
        let r = (-2 * Foundation.log(next())).squareRoot(), t = 2 * Double.pi * next()
        values.append(r * Foundation.cos(t))
        if values.count < count { values.append(r * Foundation.sin(t)) }
    }
    return values
}

func timing(runs: Int, path: String, profile: Bool, float64: Bool) -> Never {
    let t0 = now()
    let model: Model
    do { model = try ModelReader.read(path: path) } catch { fail("\(error)", code: 2) }
    do {
        let declared = try Interpreter(model: model)
        let interpreter = float64 ? try declared.computingInFloat64() : declared
        let loadMs = now() - t0
        let initializers = Set(interpreter.graph.initializers.compactMap(\.name))
        var inputs: [String: RuntimeTensor] = [:]
        for (i, input) in interpreter.graph.inputs.enumerated() {
            guard let name = input.name, !name.isEmpty, !initializers.contains(name) else { continue }
            guard let type = input.type?.tensorType else { fail("graph input '\(name)' is not a tensor", code: 1) }
            let elementType = type.elementType ?? .float
            guard [.float, .float16, .bfloat16, .double].contains(elementType) else {
                fail("graph input '\(name)' is \(elementType); --time feeds floating-point inputs only", code: 1)
            }
            let shape = (type.shape?.dims ?? []).map { d -> Int in
                if case .value(let v)? = d.value, v >= 0 { return Int(v) }
                return 1
            }
            let count = shape.reduce(1, *)
            inputs[name] = try RuntimeTensor(shape: shape, values: normals(count: count, seed: 20_240_611 &+ UInt64(i)),
                                             elementType: elementType)
        }
        _ = try interpreter.run(inputs: inputs)  // warm-up
        var times: [Double] = []
        var perOperator: [String: Double] = [:]
        let nodes = interpreter.graph.nodes
        for _ in 0..<runs {
            let start = now()
            if profile {
                _ = try interpreter.run(inputs: inputs) { index, seconds in perOperator[nodes[index].opType, default: 0] += seconds }
            } else {
                _ = try interpreter.run(inputs: inputs)
            }
            times.append(now() - start)
        }
        if profile {
            let total = perOperator.values.reduce(0, +)
            for (op, seconds) in perOperator.sorted(by: { $0.value > $1.value }) {
                let name = op.escapedForTerminal
                let padded = name.padding(toLength: max(24, name.count), withPad: " ", startingAt: 0)
                FileHandle.standardError.write(Data((padded + String(format: " %8.2f ms  %5.1f %%\n",
                                                                     seconds * 1e3 / Double(runs), 100 * seconds / total)).utf8))
            }
        }
        times.sort()
        let median = times.count % 2 == 1 ? times[times.count / 2] : (times[times.count / 2 - 1] + times[times.count / 2]) / 2
        func ms(_ v: Double) -> String { String(format: "%.3f", v) }
        print("{\"runs\": \(runs), \"median_ms\": \(ms(median)), \"min_ms\": \(ms(times.first!)), "
              + "\"max_ms\": \(ms(times.last!)), \"load_ms\": \(ms(loadMs)), \"threads\": \(Parallelism.threads), "
              + "\"blas_threads\": \(openBLASThreads())}")
        exit(0)
    } catch {
        fail("\(error)", code: 1)
    }
}

if arguments.count >= 4, arguments[1] == "--time" || arguments[1] == "--profile" {
    let float64 = arguments.count == 5 && arguments[3] == "--float64"
    guard arguments.count == 4 || float64, let runs = Int(arguments[2]), runs >= 1 else {
        fail("\(arguments[1]) needs a number of runs ≥ 1; \(usage)", code: 2)
    }
    timing(runs: runs, path: arguments[arguments.count - 1], profile: arguments[1] == "--profile", float64: float64)
}
guard arguments.count == 3, !arguments[1].hasPrefix("--") else { fail(usage, code: 2) }
let model: Model
do { model = try ModelReader.read(path: arguments[1]) } catch { fail("\(error)", code: 2) }
do {
    let outputs = try Interpreter(model: model).run(inputs: [:])
    var graph = Graph(name: "outputs")
    for output in model.graph?.outputs ?? [] {
        guard let name = output.name, let value = outputs[name] else { continue }
        graph.initializers.append(try value.tensor(name: name))
    }
    var result = Model(irVersion: model.irVersion, opsetImports: model.opsetImports, graph: graph)
    result.producerName = "refrun"
    _ = try ModelWriter.write(result, to: arguments[2])
} catch {
    fail("\(error)", code: 1)
}
