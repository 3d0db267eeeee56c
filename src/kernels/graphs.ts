import onnxProto from 'onnx-proto';
import type { onnx as Onnx } from 'onnx-proto';

const { onnx } = onnxProto;

/**
 * ONNX IR version 8 with the standard opset 17. In opset 17 ReduceMax takes `axes` as an attribute,
 * while ReduceSum (since 13) and TopK take theirs as int64 inputs, supplied here as initializers.
 */
const IR_VERSION = 8;
const OPSET = 17;

const { FLOAT, INT32, INT64 } = onnx.TensorProto.DataType;
const AttributeType = onnx.AttributeProto.AttributeType;

function tensorInfo(name: string, elemType: number, dims: string[]): Onnx.IValueInfoProto {
  return {
    name,
    type: { tensorType: { elemType, shape: { dim: dims.map((dimParam) => ({ dimParam })) } } },
  };
}

function int64Vector(name: string, values: number[]): Onnx.ITensorProto {
  return { name, dataType: INT64, dims: [values.length], int64Data: values };
}

function intAttr(name: string, i: number): Onnx.IAttributeProto {
  return { name, type: AttributeType.INT, i };
}

function intsAttr(name: string, ints: number[]): Onnx.IAttributeProto {
  return { name, type: AttributeType.INTS, ints };
}

function encodeModel(graph: Onnx.IGraphProto): Uint8Array {
  return onnx.ModelProto.encode({
    irVersion: IR_VERSION,
    opsetImport: [{ domain: '', version: OPSET }],
    producerName: 'protoprune',
    graph,
  }).finish();
}

const dotsNode: Onnx.INodeProto = {
  opType: 'Gemm',
  input: ['points', 'centroids'],
  output: ['dots'],
  attribute: [intAttr('transB', 1)],
};

/**
 * `points[n,d]`, `centroids[k,d]` → `similarity[n]` (float32, max dot product) and
 * `cluster[n]` (int32, its argmax). All dimensions are symbolic so one session serves every batch.
 */
export function nearestCentroidModel(): Uint8Array {
  return encodeModel({
    name: 'nearest_centroid',
    input: [tensorInfo('points', FLOAT, ['n', 'd']), tensorInfo('centroids', FLOAT, ['k', 'd'])],
    output: [tensorInfo('similarity', FLOAT, ['n']), tensorInfo('cluster', INT32, ['n'])],
    node: [
      dotsNode,
      {
        opType: 'ReduceMax',
        input: ['dots'],
        output: ['similarity'],
        attribute: [intsAttr('axes', [1]), intAttr('keepdims', 0)],
      },
      // ArgMax returns the first index on ties (select_last_index = 0), matching the JS kernel.
      { opType: 'ArgMax', input: ['dots'], output: ['cluster64'], attribute: [intAttr('axis', 1), intAttr('keepdims', 0)] },
      { opType: 'Cast', input: ['cluster64'], output: ['cluster'], attribute: [intAttr('to', INT32)] },
    ],
  });
}

/**
 * `points[n,d]`, `centroids[k,d]` (k ≥ 2) → `top2[n,2]` (the two largest dot products, descending)
 * and `top2Cluster[n,2]` (int32, their centroid indices; TopK puts the lower index first on ties).
 */
export function nearestTwoModel(): Uint8Array {
  return encodeModel({
    name: 'nearest_two_centroids',
    initializer: [int64Vector('two', [2])],
    input: [tensorInfo('points', FLOAT, ['n', 'd']), tensorInfo('centroids', FLOAT, ['k', 'd'])],
    output: [tensorInfo('top2', FLOAT, ['n', '2']), tensorInfo('top2Cluster', INT32, ['n', '2'])],
    node: [
      dotsNode,
      {
        opType: 'TopK',
        input: ['dots', 'two'],
        output: ['top2', 'top2Cluster64'],
        attribute: [intAttr('axis', 1), intAttr('largest', 1), intAttr('sorted', 1)],
      },
      { opType: 'Cast', input: ['top2Cluster64'], output: ['top2Cluster'], attribute: [intAttr('to', INT32)] },
    ],
  });
}

/** `points[n,d]`, `centroids[k,d]`, `cluster[n]` (int32) → `similarity[n] = points[i] · centroids[cluster[i]]`. */
export function assignedSimilarityModel(): Uint8Array {
  return encodeModel({
    name: 'assigned_similarity',
    initializer: [int64Vector('rowAxis', [1])],
    input: [
      tensorInfo('points', FLOAT, ['n', 'd']),
      tensorInfo('centroids', FLOAT, ['k', 'd']),
      tensorInfo('cluster', INT32, ['n']),
    ],
    output: [tensorInfo('similarity', FLOAT, ['n'])],
    node: [
      { opType: 'Gather', input: ['centroids', 'cluster'], output: ['assigned'], attribute: [intAttr('axis', 0)] },
      { opType: 'Mul', input: ['points', 'assigned'], output: ['products'] },
      { opType: 'ReduceSum', input: ['products', 'rowAxis'], output: ['similarity'], attribute: [intAttr('keepdims', 0)] },
    ],
  });
}

/** `a[na,d]`, `b[nb,d]` → `similarities[na,nb] = a · bᵀ`. */
export function pairwiseDotModel(): Uint8Array {
  return encodeModel({
    name: 'pairwise_dot',
    input: [tensorInfo('a', FLOAT, ['na', 'd']), tensorInfo('b', FLOAT, ['nb', 'd'])],
    output: [tensorInfo('similarities', FLOAT, ['na', 'nb'])],
    node: [{ opType: 'Gemm', input: ['a', 'b'], output: ['similarities'], attribute: [intAttr('transB', 1)] }],
  });
}
