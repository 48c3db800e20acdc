// Test Coordinator dashboard: confirmation of every action, and live updates by server-sent events.
"use strict";

// Every form that changes something asks first: <form data-confirm="Abort run x?">.
document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
