// A multi-step tool loop of the Vercel AI SDK's OpenAI provider (the Responses API, store on by default):
// from step 2 on it refers to the earlier steps' items with item_reference. Prints what the loop ended with.
// Usage: node tool_loop.mjs <base URL, up to /v1> <API key> <generate|stream>
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, stepCountIs, streamText, tool } from "ai";
import { z } from "zod";

const [baseURL, apiKey, mode] = process.argv.slice(2);
const openai = createOpenAI({ baseURL, apiKey });
const calls = [];
const getWeather = tool({
  description: "The weather in a city.",
  inputSchema: z.object({ city: z.string() }),
  execute: async ({ city }) => {
    calls.push(city);
    return "sunny";
  },
});
const options = {
  model: openai.responses("assistant"),
  tools: { get_weather: getWeather },
  stopWhen: stepCountIs(3),
  prompt: "What is the weather in Oslo?",
  maxRetries: 0,
};
let text;
let steps;
if (mode === "stream") {
  const result = streamText({ ...options, onError: ({ error }) => { throw error; } });
  text = await result.text;
  steps = await result.steps;
} else {
  const result = await generateText(options);
  text = result.text;
  steps = result.steps;
}
console.log(JSON.stringify({ text, calls, steps: steps.map((step) => step.finishReason) }));
