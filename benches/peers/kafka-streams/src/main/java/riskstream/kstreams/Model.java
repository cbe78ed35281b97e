package riskstream.kstreams;

import java.io.File;
import java.io.IOException;
import java.util.Arrays;
import java.util.List;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

/**
 * The exported model (`riskstream models export NAME@ALIAS --out FILE`):
 * standardise (double, then float) -> Linear/ReLU ... -> Linear -> sigmoid, in
 * float arithmetic as riskstream's burn CPU backend and the Python peer's numpy.
 *
 * <p>The weights are shared read-only; {@link #scorer()} gives each processor
 * (one per task, one thread each) its own scratch buffers.
 */
final class Model {
    final String name;
    final String version;
    final float threshold;
    /** Position in the engine's feature vector of each model input. */
    private final int[] columns;
    private final double[] mean;
    private final double[] std;
    /** Per layer: weight [d_in][d_out] row-major, bias [d_out]. */
    private final float[][] weights;
    private final float[][] biases;
    private final int[] dIn;
    private final int[] dOut;

    Model(File file) throws IOException {
        JsonNode m = new ObjectMapper().readTree(file);
        name = m.get("name").asText();
        version = m.get("version").asText();
        threshold = (float) m.get("threshold").asDouble();
        JsonNode inputs = m.get("inputs");
        List<String> names = Arrays.asList(Features.NAMES);
        columns = new int[inputs.size()];
        for (int k = 0; k < columns.length; k++) {
            columns[k] = names.indexOf(inputs.get(k).asText());
            if (columns[k] < 0) {
                throw new IOException("model input " + inputs.get(k) + " is not a feature the engine computes");
            }
        }
        mean = doubles(m.get("mean"));
        std = doubles(m.get("std"));
        if (mean.length != columns.length || std.length != columns.length) {
            throw new IOException("mean and std must have one entry per input");
        }
        JsonNode layers = m.get("layers");
        int l = layers.size();
        weights = new float[l][];
        biases = new float[l][];
        dIn = new int[l];
        dOut = new int[l];
        int width = columns.length;
        for (int i = 0; i < l; i++) {
            JsonNode layer = layers.get(i);
            dIn[i] = layer.get("d_in").asInt();
            dOut[i] = layer.get("d_out").asInt();
            weights[i] = floats(layer.get("weight"));
            biases[i] = floats(layer.get("bias"));
            if (dIn[i] != width || weights[i].length != dIn[i] * dOut[i] || biases[i].length != dOut[i]) {
                throw new IOException("layer " + i + ": shapes do not chain");
            }
            width = dOut[i];
        }
        if (width != 1) {
            throw new IOException("the last layer must have one output");
        }
    }

    Scorer scorer() {
        return new Scorer();
    }

    /** One thread's forward pass. */
    final class Scorer {
        private final float[][] act = new float[weights.length + 1][];

        private Scorer() {
            act[0] = new float[columns.length];
            for (int i = 0; i < weights.length; i++) {
                act[i + 1] = new float[dOut[i]];
            }
        }

        /** The fraud probability of one feature vector. */
        float score(double[] features) {
            float[] x = act[0];
            for (int k = 0; k < columns.length; k++) {
                x[k] = (float) ((features[columns[k]] - mean[k]) / std[k]);
            }
            int last = weights.length - 1;
            for (int l = 0; l <= last; l++) {
                float[] in = act[l];
                float[] out = act[l + 1];
                float[] w = weights[l];
                int nOut = dOut[l];
                Arrays.fill(out, 0f);
                // out = in @ W, row by row: each out[j] sums in[i] * W[i][j] in input order.
                for (int i = 0; i < dIn[l]; i++) {
                    float xi = in[i];
                    int row = i * nOut;
                    for (int j = 0; j < nOut; j++) {
                        out[j] += xi * w[row + j];
                    }
                }
                float[] b = biases[l];
                for (int j = 0; j < nOut; j++) {
                    float y = out[j] + b[j];
                    out[j] = l < last && y < 0f ? 0f : y;
                }
            }
            // Stable sigmoid, as burn's CPU backend and numpy compute it.
            float z = act[weights.length][0];
            float e = (float) Math.exp(-Math.abs(z));
            return z >= 0f ? 1f / (1f + e) : e / (1f + e);
        }
    }

    private static double[] doubles(JsonNode a) {
        double[] out = new double[a.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = a.get(i).asDouble();
        }
        return out;
    }

    private static float[] floats(JsonNode a) {
        float[] out = new float[a.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = (float) a.get(i).asDouble();
        }
        return out;
    }
}
