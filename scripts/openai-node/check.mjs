// Drives `cyclealign serve` with the official OpenAI Node client, as a user of it would:
// chat (plain, streamed through the client's helper, streamed with include_usage), completions
// streamed with include_usage, and the model list. Run by scripts/openai-node.sh.
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.BASE_URL, apiKey: "none", maxRetries: 0 });
const model = process.env.MODEL;
const wantPromptTokens = Number(process.env.PROMPT_TOKENS);
const messages = JSON.parse(process.env.MESSAGES);
let passed = 0, failed = 0;

async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e.stack || e}`);
  }
}

function expect(cond, what) {
  if (!cond) throw new Error(what);
}

await check("models.list", async () => {
  const page = await client.models.list();
  expect(page.data.some((m) => m.id === model), `${model} not in ${JSON.stringify(page.data)}`);
});

await check("chat.completions.create", async () => {
  const r = await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0 });
  expect(r.choices[0].message.role === "assistant", `role ${r.choices[0].message.role}`);
  expect(typeof r.choices[0].message.content === "string", "no content");
  expect(r.usage.prompt_tokens === wantPromptTokens, `usage.prompt_tokens ${r.usage.prompt_tokens}, tokenize --chat --add-generation-prompt gave ${wantPromptTokens}`);
});

await check("chat.completions.stream(...).finalChatCompletion()", async () => {
  const stream = client.chat.completions.stream({ model, messages, max_tokens: 8, temperature: 0 });
  const final = await stream.finalChatCompletion();
  expect(final.choices[0].message.role === "assistant", `role ${final.choices[0].message.role}`);
  const plain = await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0 });
  expect(final.choices[0].message.content === plain.choices[0].message.content,
    `streamed ${JSON.stringify(final.choices[0].message.content)} != ${JSON.stringify(plain.choices[0].message.content)}`);
});

await check("chat stream with stream_options.include_usage", async () => {
  const stream = await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0, stream: true, stream_options: { include_usage: true } });
  let usage = null, text = "";
  for await (const chunk of stream) {
    if (chunk.usage) {
      expect(chunk.choices.length === 0, "the usage chunk has choices");
      usage = chunk.usage;
    }
    for (const c of chunk.choices) text += c.delta.content || "";
  }
  expect(usage !== null, "no usage chunk");
  expect(usage.prompt_tokens === wantPromptTokens, `usage.prompt_tokens ${usage.prompt_tokens}, want ${wantPromptTokens}`);
  expect(usage.total_tokens === usage.prompt_tokens + usage.completion_tokens, "total_tokens");
});

await check("completions stream with stream_options.include_usage", async () => {
  const stream = await client.completions.create({ model, prompt: "Hello", max_tokens: 5, temperature: 0, stream: true, stream_options: { include_usage: true } });
  let usage = null;
  for await (const chunk of stream) if (chunk.usage) usage = chunk.usage;
  expect(usage && usage.completion_tokens > 0, `usage ${JSON.stringify(usage)}`);
});

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
