// JSON over fetch with the session cookie and the CSRF header, shared by every page.
// Every failure becomes an ApiError whose message is the server's {"detail"} (shown as
// text) or a plain sentence a person can act on.

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
  if (status === 404) return "Not found: it may have been closed or removed.";
  if (status >= 500) return `The server failed (HTTP ${status}). Your work on this page is kept; try again.`;
  return `The request failed (HTTP ${status}).`;
}

// request(method, url, body) -> parsed JSON, or null for 204 No Content.
export function makeRequest(csrfToken, root = "") {
  return async function request(method, url, body) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") headers["X-CSRFToken"] = csrfToken;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(root + url, {
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
  };
}
