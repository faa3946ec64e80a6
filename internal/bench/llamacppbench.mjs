// llama.cpp side of `cyclealign bench --compare-llamacpp`: the same workloads as the Go engine,
// run through the prebuilt llama.cpp libraries of npm node-llama-cpp on a GGUF file converted
// from the same random-init checkpoint. Usage: node llamacppbench.mjs CONFIG.json; prints JSON.
import {readFileSync} from "node:fs";
import {join} from "node:path";
import {pathToFileURL} from "node:url";

const cfg = JSON.parse(readFileSync(process.argv[2], "utf8"));
const nlc = await import(pathToFileURL(join(cfg.modules, "node-llama-cpp", "dist", "index.js")).href);
// llama.cpp's own timing of decode steps (its perf report) is kept; errors go to stderr.
let evalLine = "";
const logger = (level, message) => {
    if (/ eval time =/.test(message) && !/prompt eval/.test(message)) evalLine = message;
    else if (level === nlc.LlamaLogLevel.error || level === nlc.LlamaLogLevel.fatal) console.error(message);
};
const llama = await nlc.getLlama({gpu: false, build: "never", usePrebuiltBinaries: true, progressLogs: false,
    logLevel: nlc.LlamaLogLevel.info, logger, maxThreads: cfg.threads});
const model = await llama.loadModel({modelPath: cfg.gguf, gpuLayers: 0});

// A deterministic generator of token ids above the special ones, as the Go side draws them.
let state = 12345;
const randomTokens = (n) => Array.from({length: n}, () => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return 3 + (state % (cfg.vocab - 3));
});

// timeUntil calls fn (which returns the tokens it timed and the seconds they took) after one
// untimed call, until it ran at least twice and for two seconds, and returns tokens/s.
async function timeUntil(fn) {
    await fn();
    let tokens = 0, seconds = 0, reps = 0;
    while (reps < 2 || seconds < 2) {
        const [n, s] = await fn();
        tokens += n;
        seconds += s;
        reps++;
    }
    return tokens / seconds;
}

const now = () => Number(process.hrtime.bigint()) / 1e9;

async function withContext(sequences, fn) {
    const context = await model.createContext({sequences, contextSize: sequences * cfg.context, threads: cfg.threads,
        performanceTracking: true});
    try {
        const seqs = Array.from({length: sequences}, () => context.getSequence());
        return await fn(seqs, context);
    } finally {
        await context.dispose();
    }
}

// Scoring: every position's logits (a next token is chosen from each), all rows in one batch.
const scoreRate = await withContext(cfg.batch, (seqs) => timeUntil(async () => {
    const rows = seqs.map(() => randomTokens(cfg.score_len));
    await Promise.all(seqs.map((s) => s.clearHistory()));
    const t0 = now();
    await Promise.all(seqs.map((s, i) => s.controlledEvaluate(rows[i].map((t) => [t, {generateNext: {token: true}}]))));
    return [cfg.batch * cfg.score_len, now() - t0];
}));

// Greedy decoding of rows sequences at once: the prefill and the first step are not timed.
// It also returns llama.cpp's own count of decode steps per second (from its perf report:
// the time inside llama_decode, without node-llama-cpp's JavaScript around it).
async function decodeRate(rows) {
    return withContext(rows, async (seqs, context) => [await timeUntil(async () => {
        await Promise.all(seqs.map((s) => s.clearHistory()));
        const starts = [], ends = [];
        await Promise.all(seqs.map(async (s, i) => {
            let n = 0;
            for await (const _ of s.evaluate(randomTokens(cfg.prompt_len), {temperature: 0})) {
                n++;
                if (n === 2) starts[i] = now();
                if (n === cfg.new_tokens) break;
            }
            ends[i] = now();
        }));
        return [rows * (cfg.new_tokens - 2), Math.max(...ends) - Math.max(...starts)];
    }), await ownRate(context)]);
}
async function ownRate(context) {
    evalLine = "";
    await context.printTimings();
    const m = / eval time =\s*([0-9.]+) ms \/\s*([0-9]+) runs/.exec(evalLine);
    if (!m) throw new Error(`no decode timing in llama.cpp's perf report: ${JSON.stringify(evalLine)}`);
    return Number(m[2]) / (Number(m[1]) / 1000);
}
const [gen] = await decodeRate(cfg.batch);
const [gen1, gen1Own] = await decodeRate(1);

// The converter's check: log-probabilities of the given sequence's tokens, from the full
// distribution at temperature 1.
const checkLogProbs = await withContext(1, async ([s]) => {
    const out = await s.controlledEvaluate(cfg.check.map((t) => [t, {generateNext: {probabilities: true,
        options: {temperature: 1, topK: 0, topP: 1, minP: 0}}}]));
    return cfg.check.slice(1).map((t, i) => Math.log(out[i].next.probabilities.get(t) ?? 0));
});

console.log(JSON.stringify({
    engine: "llama.cpp",
    detail: `llama.cpp ${llama.llamaCppRelease.release} (node-llama-cpp ${cfg.version}), ${llama.buildType} build, KV cache F16`,
    threads: cfg.threads,
    cpu: true,
    params: cfg.params,
    score_tokens_per_s: scoreRate,
    generate_tokens_per_s: gen,
    generate_batch1_tokens_per_s: gen1,
    generate_batch1_in_library_tokens_per_s: gen1Own,
    peak_rss_mib: process.resourceUsage().maxRSS / 1024,
    check_logprobs: checkLogProbs,
}));
await model.dispose();
await llama.dispose();
