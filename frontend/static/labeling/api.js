// The labeling REST API (PRODUCT.md section 3), called with the session cookie and the
// CSRF header. Every failure becomes an ApiError whose message is the server's {"detail"}
// or a plain sentence a labeler can act on.

import { ApiError, makeRequest } from "../studio/http.js";

export { ApiError };

export function makeApi({ apiRoot, csrfToken }) {
  const request = makeRequest(csrfToken, apiRoot);

  return {
    // The labeler's current task (the active lease first), or null when there is none.
    // `excludeId` asks for a task other than the one on screen (background prefetch).
    nextTask(slug, excludeId = null) {
      const query = excludeId === null ? "" : `?exclude=${encodeURIComponent(excludeId)}`;
      return request("GET", `projects/${encodeURIComponent(slug)}/tasks/next/${query}`);
    },
    submitRanking(taskId, payload) {
      return request("POST", `tasks/${encodeURIComponent(taskId)}/rankings/`, payload);
    },
    skipTask(taskId) {
      return request("POST", `tasks/${encodeURIComponent(taskId)}/skip/`, {});
    },
  };
}
