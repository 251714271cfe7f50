// JSON over fetch with the session cookie and the CSRF header. Errors carry the server's
// {"detail"} so the page can show it as is (as text).

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "ApiError";
    this.status = status; // 0: the server could not be reached
  }
}

function messageFor(status, data) {
  if (data && typeof data.detail === "string" && data.detail) return data.detail;
  if (status === 401 || status === 403) return "Not allowed. Are you still logged in?";
  if (status >= 500) return `The server failed (HTTP ${status}). Try again.`;
  return `The request failed (HTTP ${status}).`;
}

export function makeClient(csrfToken) {
  async function request(method, url, body) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") headers["X-CSRFToken"] = csrfToken;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(url, {
        method,
        headers,
        credentials: "same-origin",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new ApiError(0, "Network error: the server could not be reached.");
    }
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
    get: (url) => request("GET", url),
    post: (url, body = {}) => request("POST", url, body),
  };
}

// "/api/v1/rounds/{id}/" -> "/api/v1/rounds/12/"
export function fill(template, id) {
  return template.replace("{id}", encodeURIComponent(String(id)));
}

export function readConfig(id) {
  return JSON.parse(document.getElementById(id).textContent);
}
