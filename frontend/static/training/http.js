// The dashboard's and playground's client: GET/POST on top of the shared studio/http.js.

import { ApiError, makeRequest } from "../studio/http.js";

export { ApiError };

export function makeClient(csrfToken) {
  const request = makeRequest(csrfToken);
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
