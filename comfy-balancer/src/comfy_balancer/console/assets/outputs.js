// A task's outputs as a gallery: images and videos shown, every file downloadable.
import { bytes, h } from "./dom.js";

export function gallery(task) {
  if (!task.outputs.length) {
    return h("p", { class: "muted" }, task.status === "succeeded" ? "The task made no files." : "No outputs.");
  }
  return h("div", { class: "gallery", role: "list", "aria-label": "Outputs" }, task.outputs.map((output) => {
    const name = output.filename || `output-${output.index}`;
    const media = output.media_type || "";
    let shown;
    if (media.startsWith("image/")) {
      shown = h("a", { href: output.url, target: "_blank", rel: "noopener" },
        h("img", { src: output.url, alt: `${name}, made by graph node ${output.node_id ?? "?"}`, loading: "lazy" }));
    } else if (media.startsWith("video/")) {
      shown = h("video", { src: output.url, controls: true, preload: "metadata" });
    } else {
      shown = h("p", { class: "mono" }, media || "file");
    }
    return h("figure", { role: "listitem" }, shown,
      h("figcaption", {}, h("span", {}, name), h("span", {},
        h("a", { href: output.url, download: name, "aria-label": `Download ${name}` }, "Download"),
        output.size ? ` ${bytes(output.size)}` : "")));
  }));
}
