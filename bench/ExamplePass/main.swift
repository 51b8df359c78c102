// example-pass: times README's example pass (RemoveIdentityAndDropout.swift,
// kept identical to README.md and the DocC article by a test) on a model, for
// `make bench` (issue 13: the pass users copy must be linear).
//
//   ExamplePass IN.onnx
//
// Reads IN, runs the pass alone through PassManager, and prints one JSON
// line: {"nodes_before": …, "nodes_after": …, "pass_seconds": …}. Exit 0 on
// success, 2 on bad usage or an unreadable model.

import Foundation
import GraphPasses
import ONNXFile
import ONNXGraph

let arguments = CommandLine.arguments.dropFirst()
guard arguments.count == 1, let path = arguments.first else {
    FileHandle.standardError.write(Data("usage: ExamplePass IN.onnx\n".utf8))
    exit(2)
}
do {
    var model = try ModelReader.read(path: path)
    let before = model.graph?.nodeCount ?? 0
    let clock = ContinuousClock()
    let start = clock.now
    _ = try PassManager(passes: [RemoveIdentityAndDropout()]).run(on: &model)
    let elapsed = clock.now - start
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
    print("{\"nodes_before\": \(before), \"nodes_after\": \(model.graph?.nodeCount ?? 0), \"pass_seconds\": \(seconds)}")
} catch {
    FileHandle.standardError.write(Data("ExamplePass: \(path): \(error)\n".utf8))
    exit(2)
}
