// Makes images with the Vercel AI SDK's `generateText` on the default OpenAI provider,
// `createOpenAI({baseURL})(modelId)`, which speaks the Responses API, and prints the result as
// one JSON line.
// Usage: node ai_sdk_responses.mjs BASE_URL REQUEST_JSON
// REQUEST_JSON: {"model", "prompt", "tool"?: the image_generation tool's options, "edit"?:
//                base64 of a PNG to attach to the prompt, "stream"?: true for streamText,
//                "followUp"?: {"model", "prompt"}: a second turn, sent after the first one's
//                messages with `store: false`}
// Prints {"text", "finishReason", "files": [{"mediaType", "base64"}], "sdkFiles": how many
// of them were in `result.files`, "earlier": the first turn's images (base64)}, or
// {"thrown": NAME, "message": MESSAGE} (exit 0).
// @ai-sdk/openai turns an `image_generation_call` into the result of its provider-executed
// `image_generation` tool (base64): those results are the images, gathered here as files
// beside any `result.files`.
import { generateText, streamText } from "ai";
import { createOpenAI } from "@ai-sdk/openai";

const [baseURL, raw] = process.argv.slice(2);
const request = JSON.parse(raw);
const openai = createOpenAI({ baseURL, apiKey: "unused" });
const content = [{ type: "text", text: request.prompt }];
if (request.edit) {
  content.push({ type: "image", image: Buffer.from(request.edit, "base64"), mediaType: "image/png" });
}

try {
  const options = {
    model: openai(request.model),
    messages: [{ role: "user", content }],
    tools: request.tool ? { image_generation: openai.tools.imageGeneration(request.tool) } : undefined,
    maxRetries: 0,
  };
  let result = request.stream ? streamText({ ...options, onError: () => {} }) : await generateText(options);
  if (request.stream) {
    // The stream's promises resolve once it has been read to its end.
    result = {
      text: await result.text,
      finishReason: await result.finishReason,
      toolResults: await result.toolResults,
      files: await result.files,
    };
  }
  let earlier = [];
  if (request.followUp) {
    const first = result;
    earlier = first.toolResults.map((part) => part.output.result);
    result = await generateText({
      model: openai(request.followUp.model),
      messages: [
        ...options.messages,
        ...first.response.messages,
        { role: "user", content: request.followUp.prompt },
      ],
      providerOptions: { openai: { store: false } },
      maxRetries: 0,
    });
  }
  const generated = result.toolResults
    .filter((part) => part.toolName === "image_generation")
    .map((part) => ({ mediaType: "image/" + (request.tool?.outputFormat ?? "png"), base64: part.output.result }));
  const files = result.files.map((file) => ({ mediaType: file.mediaType, base64: file.base64 }));
  console.log(
    JSON.stringify({
      text: result.text,
      finishReason: result.finishReason,
      files: [...files, ...generated],
      sdkFiles: files.length,
      earlier,
    }),
  );
} catch (error) {
  console.log(JSON.stringify({ thrown: error.constructor.name, message: error.message }));
}
