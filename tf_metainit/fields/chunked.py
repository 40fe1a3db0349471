"""A field over more points than memory holds at once: the loss, its gradient and the
outputs computed a chunk of points at a time.

A field keeps its activations of every point for the backward pass, so memory grows
with the image in one piece; in chunks it is what one chunk needs beside the image's
own arrays (memory.py estimates both), and the result is the same up to float
summation order.
"""

import tensorflow as tf


def _chunks(num_points, chunk):
  return (num_points + chunk - 1) // chunk


def mean_loss(point_loss, params, inputs, targets, chunk):
  """point_loss(params, inputs, targets) -> (B,) mean over the points of axis 1, for
  inputs (B or 1, N, ...) and targets (B, N, ...) of any N, in chunks of `chunk`
  points along axis 1.

  The mean over all N points is the chunks' means weighted by their share of N. Its
  gradient recomputes each chunk's forward pass under its own tape (nothing of a
  chunk is kept between chunks), so it is first order only: a second-order
  meta-gradient through it would be wrong, and meta-training uses the plain loss.
  """
  num_points = tf.shape(targets)[1]
  count = _chunks(num_points, chunk)
  dtype = targets.dtype
  weight = lambda size: tf.cast(size, dtype) / tf.cast(num_points, dtype)

  def piece(i):
    start = i * chunk
    x, y = inputs[:, start:start + chunk], targets[:, start:start + chunk]
    return x, y, weight(tf.shape(y)[1])

  @tf.custom_gradient
  def loss(*flat):
    params = list(flat)

    def add(i, total):
      x, y, w = piece(i)
      return i + 1, total + w * point_loss(params, x, y)

    batch = tf.shape(targets)[:1]
    _, total = tf.while_loop(lambda i, _: i < count, add,
                             (tf.constant(0), tf.zeros(batch, dtype)),
                             parallel_iterations=1)

    def grad(upstream):
      def add_grads(i, sums):
        x, y, w = piece(i)
        with tf.GradientTape() as tape:
          tape.watch(params)
          value = tf.reduce_sum(upstream * w * point_loss(params, x, y))
        return i + 1, [s + g for s, g in zip(sums, tape.gradient(value, params))]

      _, sums = tf.while_loop(lambda i, _: i < count, add_grads,
                              (tf.constant(0), [tf.zeros_like(p) for p in params]),
                              parallel_iterations=1)
      return sums

    return total, grad

  return loss(*[tf.convert_to_tensor(p) for p in params])


def apply(field, params, inputs, chunk):
  """field.apply(params, inputs) for inputs (..., N, in_dim) of any N (the points on
  the second-to-last axis), `chunk` points at a time."""
  inputs = tf.convert_to_tensor(inputs)
  rank = inputs.shape.rank
  # Chunks are stacked along their points axis, moved to the front for the concat.
  to_front = [rank - 2] + [a for a in range(rank) if a != rank - 2]
  back = [to_front.index(a) for a in range(rank)]
  count = _chunks(tf.shape(inputs)[-2], chunk)
  outputs = tf.TensorArray(tf.float32, size=count, infer_shape=False)

  def body(i, outputs):
    part = field.apply(params, inputs[..., i * chunk:(i + 1) * chunk, :])
    return i + 1, outputs.write(i, tf.transpose(part, to_front))

  _, outputs = tf.while_loop(lambda i, _: i < count, body, (tf.constant(0), outputs),
                             parallel_iterations=1)
  return tf.transpose(outputs.concat(), back)
