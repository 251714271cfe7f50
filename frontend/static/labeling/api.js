// The labeling REST API (PRODUCT.md section 3), called with the session cookie and the
// CSRF header. Every failure becomes an ApiError whose message is the server's {"detail"}
// or a plain sentence a labeler can act on.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "ApiError";
    this.status = status; // 0 when the server could not be reached
  }
}

function messageFor(status, data) {
  if (data && typeof data.detail === "string" && data.detail) {
    if (status === 403 && data.detail.startsWith("CSRF")) {
      return "Your session token is out of date. Reload the page and try again.";
    }
    return data.detail;
  }
  if (status === 401 || status === 403) return "You are not allowed to do this. Are you still logged in?";
  if (status === 404) return "Not found: the task may have been closed.";
  if (status >= 500) return `The server failed (HTTP ${status}). Your work on this page is kept; try again.`;
  return `The request failed (HTTP ${status}).`;
}

export function makeApi({ apiRoot, csrfToken }) {
  async function request(method, path, body) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") headers["X-CSRFToken"] = csrfToken;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(apiRoot + path, {
        method,
        headers,
        credentials: "same-origin",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new ApiError(0, "Network error: the server could not be reached. Nothing was lost; try again.");
    }
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) throw new ApiError(response.status, messageFor(response.status, data));
    return data;
  }

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
