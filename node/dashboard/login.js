// Redeems the one-time code in this address's fragment (never sent to a server, dropped from history at once)
// for the node's session cookie, then opens the dashboard.
const line = document.getElementById("login-status");
const code = location.hash.slice(1);
history.replaceState(null, "", "/login");
if (!/^[0-9a-f]{1,128}$/.test(code)) {
  line.textContent = "This address has no login code: run `cimesh dashboard` and open the address it prints.";
} else {
  fetch("/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ code }),
    credentials: "same-origin",
  }).then(
    async (answer) => {
      if (answer.ok) {
        location.replace("/");
        return;
      }
      const body = await answer.json().catch(() => null);
      line.textContent = body?.error?.message ?? `The node refused the login (${answer.status}).`;
    },
    (error) => {
      line.textContent = `The node did not answer: ${error.message}`;
    },
  );
}
