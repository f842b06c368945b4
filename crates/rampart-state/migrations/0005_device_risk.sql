-- A device's risk is the highest severity of its alerts not resolved (kept up to date from now
-- on by every new alert and status change); set it once for the alerts already stored.
UPDATE devices SET risk = COALESCE((
    SELECT CASE MAX(CASE severity WHEN 'high' THEN 3 WHEN 'medium' THEN 2 WHEN 'low' THEN 1 ELSE 0 END)
        WHEN 3 THEN 'high' WHEN 2 THEN 'medium' WHEN 1 THEN 'low' ELSE 'none' END
    FROM alerts
    WHERE alerts.tenant_id = devices.tenant_id AND alerts.device_id = devices.id
      AND alerts.status <> 'resolved'
), 'none');
