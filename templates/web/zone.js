// The sign-up form's time zone: preselect the visitor's own, as the browser knows it. Without JavaScript the
// form keeps the installation's default; after an error it keeps what the visitor picked (no data-from-browser).
(function () {
  var select = document.getElementById("timezone");
  if (!select || !select.hasAttribute("data-from-browser")) return;
  var zone;
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  } catch (e) {
    return;
  }
  for (var i = 0; i < select.options.length; i++) {
    if (select.options[i].value === zone) {
      select.selectedIndex = i;
      return;
    }
  }
})();
