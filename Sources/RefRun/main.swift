// refrun: runs a model with bnfold's reference runtime (used by
// Tests/CrossCheck/runtime_oracle.py to compare it with onnxruntime).
//
//   refrun IN.onnx OUT.onnx
//
// Graph inputs are taken from initializers of the same name (the caller
// stores the inputs there). OUT.onnx is a model whose graph holds one
// initializer per graph output of IN, named like it. Exit 0 on success,
// 1 when the runtime refuses or fails (one line on stderr), 2 on bad usage
// or unreadable input.

import ONNXFile
import ONNXGraph
import ReferenceRuntime

import Foundation

func fail(_ message: String, code: Int32) -> Never {
    FileHandle.standardError.write(Data("refrun: \(message)\n".utf8))
    exit(code)
}

let arguments = CommandLine.arguments
guard arguments.count == 3 else { fail("usage: refrun IN.onnx OUT.onnx", code: 2) }
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
